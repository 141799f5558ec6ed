"""The unified VAE (Eq. 15-17): normalised latents, the KL, candidates, and errors."""

import pytest
import torch

from mdm.nn.layout import Modality
from mdm.nn.vae import UnifiedVAE, gaussian_kl


def make_vae():
    return UnifiedVAE({Modality.TEXT: 20, Modality.IMAGE: 12}, d_latent=8, d_hidden=32)


def test_gaussian_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    z = mu + (0.5 * logvar).exp() * torch.randn(200_000, 6, generator=g, dtype=torch.float64)
    log_q = (-0.5 * ((z - mu) ** 2 / logvar.exp() + logvar)).sum(-1)
    log_p = (-0.5 * z**2).sum(-1)
    mc = (log_q - log_p).mean()
    assert gaussian_kl(mu, logvar).item() == pytest.approx(mc.item(), abs=0.03)


def test_mu_is_rms_normalised_and_candidates_are_clean_latents():
    vae = make_vae()
    mu, _ = vae.encode(torch.randint(0, 20, (3, 5)), Modality.TEXT)
    assert torch.allclose(mu.pow(2).mean(-1), torch.ones(3, 5), atol=1e-4)
    cands = vae.candidates(Modality.IMAGE)
    assert cands.shape == (12, 8)
    assert torch.allclose(cands[4], vae.encode(torch.tensor([4]), Modality.IMAGE)[0][0])


def test_modalities_share_encoder_but_not_tables():
    vae = make_vae()
    text_mu = vae.encode(torch.tensor([3]), Modality.TEXT)[0]
    image_mu = vae.encode(torch.tensor([3]), Modality.IMAGE)[0]
    assert not torch.allclose(text_mu, image_mu)
    assert vae.decode(text_mu, Modality.TEXT).shape == (1, 20)
    assert vae.decode(text_mu, Modality.IMAGE).shape == (1, 12)


def test_reconstruction_learns():
    vae = make_vae()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    states = torch.arange(20)[None]
    first = vae(states, Modality.TEXT).rec.item()
    for _ in range(100):
        out = vae(states, Modality.TEXT)
        opt.zero_grad()
        (out.rec + 1e-3 * out.kl).backward()
        opt.step()
    assert out.rec.item() < 0.1 * first


def test_bad_states_raise():
    vae = make_vae()
    with pytest.raises(ValueError, match=r"text states must be in \[0, 20\)"):
        vae.encode(torch.tensor([20]), Modality.TEXT)
    with pytest.raises(TypeError, match="torch.long"):
        vae.encode(torch.tensor([1.0]), Modality.TEXT)
    only_text = UnifiedVAE({Modality.TEXT: 5})
    with pytest.raises(ValueError, match="has no modality 'image'"):
        only_text.encode(torch.tensor([1]), Modality.IMAGE)


def make_pixel_vae():
    """Text states and images as continuous 2x2x1 patches (4 values a token)."""
    return UnifiedVAE({Modality.TEXT: 20, Modality.IMAGE: 4}, d_latent=8, d_hidden=32,
                      continuous=frozenset({Modality.IMAGE}))


def test_a_continuous_modality_embeds_patches_and_reconstructs_them_by_mse():
    vae = make_pixel_vae()
    patches = torch.rand(3, 5, 4)
    mu, _ = vae.encode(patches, Modality.IMAGE)
    assert mu.shape == (3, 5, 8) and torch.allclose(mu.pow(2).mean(-1), torch.ones(3, 5), atol=1e-2)
    xi = torch.zeros(3, 5, 8)
    out = vae(patches, Modality.IMAGE, xi=xi)
    assert out.logits.shape == (3, 5, 4)  # the patch's values, not logits over states
    assert out.rec.item() == pytest.approx(((out.logits - patches) ** 2).mean().item(), rel=1e-6)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    first = out.rec.item()
    for _ in range(150):
        out = vae(patches, Modality.IMAGE, xi=xi)
        opt.zero_grad()
        out.rec.backward()
        opt.step()
    assert out.rec.item() < 0.1 * first
    assert vae.encode(torch.tensor([3]), Modality.TEXT)[0].shape == (1, 8)  # the text table is unchanged


def test_continuous_modality_errors():
    vae = make_pixel_vae()
    with pytest.raises(ValueError, match=r"image tokens are continuous: a float tensor \(\.\.\., 4\)"):
        vae.encode(torch.rand(2, 5, 3), Modality.IMAGE)  # 3 values, not 4
    with pytest.raises(ValueError, match="continuous: a float tensor"):
        vae.encode(torch.zeros(2, 5, 4, dtype=torch.long), Modality.IMAGE)
    with pytest.raises(ValueError, match="image is continuous; it has no candidate states"):
        vae.candidates(Modality.IMAGE)
    with pytest.raises(ValueError, match="continuous modalities"):
        UnifiedVAE({Modality.TEXT: 5}, continuous=frozenset({Modality.IMAGE}))
