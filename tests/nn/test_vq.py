"""The stage-0 VQ-VAE tokenizer (mdm.nn.vq): shapes, straight-through gradient, EMA codebook, learning, files."""

import json
import math

import pytest
import torch

from mdm.nn.vq import VQConfig, VQVAE, codebook_usage, train_vq

TINY = dict(hidden=16, n_res_blocks=1, codebook_size=32, code_dim=8)
PALETTE = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=torch.float32)


def coloured_squares(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size): one or two axis-aligned squares of a palette colour on black."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 3, size, size)
    for i in range(n):
        for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
            side = int(torch.randint(4, size // 2 + 1, (1,), generator=g))
            y, x = (int(torch.randint(0, size - side + 1, (1,), generator=g)) for _ in range(2))
            colour = PALETTE[int(torch.randint(len(PALETTE), (1,), generator=g))]
            images[i, :, y:y + side, x:x + side] = colour[:, None, None]
    return images


@pytest.mark.parametrize("downsample", [2, 4])
def test_encode_decode_shapes_and_code_range(downsample):
    model = VQVAE(VQConfig(downsample=downsample, **TINY)).eval()
    images = torch.rand(2, 3, 16, 24)
    codes = model.encode(images)
    assert codes.shape == (2, 16 // downsample, 24 // downsample) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < TINY["codebook_size"]
    with torch.no_grad():
        recon = model.decode(codes)
    assert recon.shape == images.shape
    assert 0.0 <= float(recon.min()) and float(recon.max()) <= 1.0
    out = model(images)
    assert out.recon.shape == images.shape and torch.equal(out.codes, codes)
    assert set(out.losses) == {"loss", "l2", "commitment"}
    # Eq. 15 is the per-pixel mean squared error of the (unclamped) decoder output.
    raw = model.decode_latent(model.quantizer.embed[codes].permute(0, 3, 1, 2))
    torch.testing.assert_close(out.losses["l2"], ((raw - images) ** 2).mean())


def test_straight_through_gradient_reaches_encoder():
    model = VQVAE(VQConfig(**TINY)).train()
    out = model(torch.rand(4, 3, 16, 16))
    out.losses["l2"].backward()  # reconstruction only: the commitment term alone would also reach the encoder
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert all(not b.requires_grad for b in model.quantizer.buffers())  # the codebook learns by EMA, not gradient


def test_codebook_changes_only_in_training_forward():
    model = VQVAE(VQConfig(**TINY))
    images = torch.rand(4, 3, 16, 16)
    before = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
    model.eval()(images)
    model.train().encode(images)  # encode never updates, even in training mode
    for k, v in model.quantizer.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.train()(images)
    assert bool(model.quantizer.initialized)
    assert not torch.equal(model.quantizer.embed, before["embed"])


def test_dead_codes_restart_on_encoder_outputs():
    model = VQVAE(VQConfig(**TINY)).train()
    images = torch.rand(4, 3, 16, 16)
    model(images)  # initialise the codebook from data
    q = model.quantizer
    dead = torch.zeros(TINY["codebook_size"], dtype=torch.bool)
    dead[:5] = True
    q.cluster_size[dead] = 0.0
    q.embed[dead] = 1e3  # far from everything: unused
    with torch.no_grad():
        z = model._encode_z(images).permute(0, 2, 3, 1).reshape(-1, TINY["code_dim"])
    model(images)
    for code in q.embed[dead]:  # each restarted code now sits on one of this batch's encoder outputs
        assert (z - code).abs().amax(dim=1).min() < 1e-6
    assert (q.cluster_size[dead] == 1.0).all()


def test_bad_inputs_name_the_expected_shape():
    model = VQVAE(VQConfig(**TINY))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="not divisible by downsample=4"):
        model.encode(torch.rand(1, 3, 18, 16))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        model.encode(torch.rand(1, 3, 16, 16) * 2 - 1)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 32\)"):
        model.decode(torch.full((1, 4, 4), 32, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        model.decode(torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="downsample must be 2, 4 or 8"):
        VQConfig(downsample=3)


def test_codebook_usage():
    uniform = torch.arange(16).repeat(3)
    assert codebook_usage(uniform, 16) == pytest.approx({"perplexity": 16.0, "used_fraction": 1.0})
    single = torch.full((10,), 3)
    assert codebook_usage(single, 16) == pytest.approx({"perplexity": 1.0, "used_fraction": 1 / 16})
    with pytest.raises(ValueError, match="out of range"):
        codebook_usage(torch.tensor([16]), 16)


def test_training_is_deterministic_by_seed():
    data = coloured_squares(32)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = VQVAE(VQConfig(**TINY))
        history = train_vq(model, data, steps=3, batch_size=8, lr=1e-3, seed=7, progress=False)
        runs.append((history, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for k, v in runs[0][1].items():
        assert torch.equal(v, runs[1][1][k]), k
    model = VQVAE(VQConfig(**TINY))
    state = torch.random.get_rng_state()
    train_vq(model, data, steps=1, batch_size=4, seed=1, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched


def test_short_training_beats_the_mean_image_baseline():
    # 400 steps on 16x16 coloured squares, about 5 s on 2 idle CPU cores (measured:
    # held-out L2 about 0.03 x baseline). The trivial baseline predicts every
    # held-out image by the training set's mean image.
    train, held_out = coloured_squares(512, seed=0), coloured_squares(128, seed=1)
    baseline = float(((held_out - train.mean(0)) ** 2).mean())
    torch.manual_seed(0)
    config = VQConfig(hidden=32, n_res_blocks=1, downsample=2, codebook_size=128, code_dim=16)
    model = VQVAE(config)
    history = train_vq(model, train, steps=400, batch_size=32, lr=2e-3, seed=0, progress=False)
    assert len(history) == 400 and all(math.isfinite(h["loss"]) for h in history)
    model.eval()
    with torch.no_grad():
        codes = model.encode(held_out)
        l2 = float(((model.decode(codes) - held_out) ** 2).mean())
    assert l2 < 0.3 * baseline, (l2, baseline)
    assert codebook_usage(codes, config.codebook_size)["used_fraction"] > 0.25  # EMA + restarts keep codes alive


@pytest.mark.parametrize("downsample", [2, 4])
def test_a_local_vq_code_depends_on_its_own_patch_only(downsample):
    torch.manual_seed(0)
    images = coloured_squares(4)
    changed = images.clone()
    changed[:, :, :downsample, :downsample] = torch.rand(4, 3, downsample, downsample)  # patch (0, 0) only
    for local in (True, False):
        model = VQVAE(VQConfig(**{**TINY, "downsample": downsample, "local": local}))
        with torch.no_grad():
            z, z_changed = model.encoder(images), model.encoder(changed)
            same = (z - z_changed).abs().amax(1)[:, :, :] < 1e-6  # (b, h, w): encoder output unchanged
            pixels = model.decoder(z)
            one_code = z.clone()
            one_code[:, :, 0, 0] += 1.0
            moved = (model.decoder(one_code) - pixels).abs().amax(1) > 1e-6  # (b, H, W)
        others = torch.ones_like(same)
        others[:, 0, 0] = False
        outside = torch.ones_like(moved)
        outside[:, :downsample, :downsample] = False
        if local:
            assert same[others].all() and not same[:, 0, 0].any()
            assert not moved[outside].any()  # a code decodes to its own patch
        else:  # the default encoder and decoder mix neighbouring patches (so this test can fail)
            assert not same[others].all() and moved[outside].any()


def test_old_vq_configs_load_as_non_local(tmp_path):
    model = VQVAE(VQConfig(**TINY))
    model.save(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"].pop("local")  # a VQ saved before the option existed
    (tmp_path / "config.json").write_text(json.dumps(meta))
    assert VQVAE.load(tmp_path).config.local is False


def test_save_load_round_trip(tmp_path):
    model = VQVAE(VQConfig(**TINY))
    train_vq(model, coloured_squares(16), steps=2, batch_size=4, seed=0, progress=False)
    model.eval()
    images = coloured_squares(4, seed=3)
    model.save(tmp_path / "vq")
    loaded = VQVAE.load(tmp_path / "vq")
    assert loaded.config == model.config
    assert torch.equal(loaded.encode(images), model.encode(images))
    torch.testing.assert_close(loaded.decode(model.encode(images)), model.decode(model.encode(images)), rtol=0, atol=0)


def test_load_rejects_missing_or_mismatched_files(tmp_path):
    folder = tmp_path / "vq"
    VQVAE(VQConfig(**TINY)).save(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=str(folder / "model.safetensors")):
        VQVAE.load(folder)

    VQVAE(VQConfig(**TINY)).save(folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["code_dim"] = 12
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match"):
        VQVAE.load(folder)

    meta["config"]["colour"] = "blue"
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown config keys"):
        VQVAE.load(folder)
