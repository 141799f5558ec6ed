"""Stage 0 image tokenizer: a small VQ-VAE the library trains itself (DESIGN.md §1.1).

MDM feeds the diffusion model "VQVAE-processed" images (Fig. 2 of arXiv
2510.13253): every image becomes a grid of discrete code ids, the image
*states* of §1.1. So that nothing has to come from a model hub, the library
trains its own small VQ-VAE (van den Oord et al. 2017, arXiv 1711.00937):

1. a conv encoder, ``log2(downsample)`` stride-2 convs then residual blocks,
   maps pixels (b, 3, H, W) to vectors (b, code_dim, h, w), h = H / downsample;
2. each vector is replaced by its nearest of ``codebook_size`` codes, with the
   straight-through estimator carrying the decoder's gradient to the encoder
   and a commitment loss ``beta * ||z - sg(e)||^2`` (beta = 0.25, the paper's);
3. a conv decoder maps the codes back to pixels with a *linear* output in the
   centred space the encoder reads (``2 x - 1``); :meth:`VQVAE.decode` and
   ``VQOutput.recon`` clamp to [0, 1], the :class:`~mdm.data.sample.Sample`
   convention. Not a sigmoid: on mostly-black images a sigmoid output is driven
   into saturation in the first few dozen steps (everything predicted black,
   zero gradient), and training never recovers; a linear head does not stall;
4. the reconstruction loss is the L2 of Eq. 15, reported as ``"l2"``: the mean
   squared error per pixel value (mean over b, c, H, W) of the unclamped
   output, what §1.2 reports for images decoded through this VQ decoder (the
   clamped image's error is never larger).

The codebook is not trained by gradient but by exponential moving averages of
the encoder outputs assigned to each code (decay 0.99, Razavi et al. 2019,
arXiv 1906.00446), and codes that fall out of use are restarted on encoder
outputs (Dhariwal et al. 2020, Jukebox). Both are what make *small* VQ-VAEs
train reliably: with a gradient-trained codebook most codes die early and the
grid carries a handful of colours.

Shape letters: ``b`` batch, ``c`` channels, ``H W`` image, ``h w`` code grid,
``d`` code_dim, ``K`` codebook_size, ``n`` encoder vectors in a batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "mdm.vq-vae"


@dataclass
class VQConfig:
    """A VQ-VAE's shape. The defaults train on 32x32 RGB in minutes on a laptop CPU."""

    in_channels: int = 3
    hidden: int = 64  # conv width
    n_res_blocks: int = 2  # residual blocks in the encoder and in the decoder
    downsample: int = 4  # H / h; 2, 4 or 8 (1, 2 or 3 stride-2 convs)
    codebook_size: int = 256  # K: the image vocabulary of §1.1
    code_dim: int = 32
    beta: float = 0.25  # commitment weight (van den Oord et al. 2017)
    ema_decay: float = 0.99
    ema_eps: float = 1e-5  # Laplace smoothing of the EMA cluster sizes
    dead_code_threshold: float = 1.0  # restart a code whose EMA count per batch falls below this
    local: bool = False  # each code sees (and decodes to) its own downsample x downsample patch only

    def __post_init__(self) -> None:
        if self.downsample not in (2, 4, 8):
            raise ValueError(f"VQConfig.downsample must be 2, 4 or 8, got {self.downsample}")
        for name in ("in_channels", "hidden", "codebook_size", "code_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VQConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_res_blocks < 0:
            raise ValueError(f"VQConfig.n_res_blocks must be >= 0, got {self.n_res_blocks}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"VQConfig.ema_decay must be in (0, 1), got {self.ema_decay}")


class VQOutput(NamedTuple):
    recon: Tensor  # (b, c, H, W) clamped to [0, 1]
    codes: Tensor  # (b, h, w) long
    losses: dict[str, Tensor]  # "loss" (to minimise), "l2" (Eq. 15), "commitment"


class ResBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))``, the VQ-VAE paper's block (``kernel=1``: no spatial context)."""

    def __init__(self, width: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(width, width, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class EMAQuantizer(nn.Module):
    """Nearest-code lookup with an EMA-updated codebook and dead-code restarts.

    All state is in buffers (saved with the weights); it changes only in
    :meth:`forward` in training mode. Restart targets are drawn with
    probability proportional to their squared quantisation error (k-means++
    style) rather than uniformly, so restarted codes go where the codebook fits
    worst, not to the black background that most vectors show. Measured on
    16x16 coloured squares (factor 2 and 4, two seeds each): held-out L2 15-25%
    lower than with uniform restarts.
    """

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        K, d = config.codebook_size, config.code_dim
        embed = torch.randn(K, d) / math.sqrt(d)
        self.register_buffer("embed", embed)
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("cluster_size", torch.ones(K))
        self.register_buffer("initialized", torch.tensor(False))

    def nearest(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """Code ids (n,) and squared distances (n,) of vectors ``flat`` (n, d)."""
        dist = (
            flat.pow(2).sum(1, keepdim=True)
            - 2.0 * flat @ self.embed.t()
            + self.embed.pow(2).sum(1)[None, :]
        )
        best, ids = dist.min(dim=1)
        return ids, best.clamp_min(0.0)

    @torch.no_grad()
    def _init_codebook(self, flat: Tensor) -> None:
        """Data-dependent init: codes start on the first training batch's encoder outputs."""
        pick = torch.randint(flat.shape[0], (self.config.codebook_size,), device=flat.device)
        self.embed.copy_(flat[pick])
        self.embed_sum.copy_(flat[pick])
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, flat: Tensor, ids: Tensor, err: Tensor) -> None:
        """EMA step on the codebook (Razavi et al. 2019, App. A.1), then dead-code restarts."""
        c = self.config
        K = c.codebook_size
        onehot = F.one_hot(ids, K).to(flat.dtype)  # (n, K)
        self.cluster_size.mul_(c.ema_decay).add_(onehot.sum(0), alpha=1 - c.ema_decay)
        self.embed_sum.mul_(c.ema_decay).add_(onehot.t() @ flat, alpha=1 - c.ema_decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + c.ema_eps) / (total + K * c.ema_eps) * total
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        dead = self.cluster_size < c.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead:
            weights = err + 1e-12 if float(err.sum()) > 0 else torch.ones_like(err)
            pick = torch.multinomial(weights, n_dead, replacement=n_dead > flat.shape[0])
            self.embed[dead] = flat[pick]
            self.embed_sum[dead] = flat[pick]
            self.cluster_size[dead] = 1.0

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(b, d, h, w) -> straight-through quantised z, code ids (b, h, w), commitment loss."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        if self.training and not bool(self.initialized):
            self._init_codebook(flat.detach())
        ids, err = self.nearest(flat.detach())
        q = F.embedding(ids, self.embed).view(b, h, w, d).permute(0, 3, 1, 2)
        if self.training:
            self._update(flat.detach(), ids, err)
        commitment = F.mse_loss(z, q.detach())
        q_st = z + (q - z).detach()  # straight-through: forward q, backward identity
        return q_st, ids.view(b, h, w), commitment


class VQVAE(nn.Module):
    """Conv encoder -> EMA codebook -> conv decoder. See the module docstring.

    With ``config.local`` the encoder is a patch embedding (a conv whose kernel is its
    stride) followed by 1x1 convs, and the decoder its mirror: a code is a function of
    its own patch alone and always decodes to the same patch. Why: the default encoder's
    receptive field covers a whole 16 px canvas, so every code also describes its
    neighbourhood -- on moving digits all 256 codes are in use with an entropy of 5.40
    nats (uniform: 5.55), even the blank background is spread over many codes, and what
    a code means changes whenever anything nearby moves.
    """

    def __init__(self, config: VQConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or VQConfig()
        if c.local:
            self.encoder = nn.Sequential(
                nn.Conv2d(c.in_channels, c.hidden, c.downsample, stride=c.downsample),
                *[ResBlock(c.hidden, kernel=1) for _ in range(c.n_res_blocks)],
                nn.ReLU(), nn.Conv2d(c.hidden, c.code_dim, 1))
            self.quantizer = EMAQuantizer(c)
            self.decoder = nn.Sequential(
                nn.Conv2d(c.code_dim, c.hidden, 1), *[ResBlock(c.hidden, kernel=1) for _ in range(c.n_res_blocks)],
                nn.ReLU(), nn.ConvTranspose2d(c.hidden, c.in_channels, c.downsample, stride=c.downsample))
            return
        n_down = int(math.log2(c.downsample))
        enc: list[nn.Module] = [nn.Conv2d(c.in_channels, c.hidden, 3, padding=1)]
        for _ in range(n_down):
            enc += [nn.ReLU(), nn.Conv2d(c.hidden, c.hidden, 4, stride=2, padding=1)]
        enc += [ResBlock(c.hidden) for _ in range(c.n_res_blocks)]
        enc += [nn.ReLU(), nn.Conv2d(c.hidden, c.code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = EMAQuantizer(c)
        dec: list[nn.Module] = [nn.Conv2d(c.code_dim, c.hidden, 3, padding=1)]
        dec += [ResBlock(c.hidden) for _ in range(c.n_res_blocks)]
        for _ in range(n_down):
            dec += [nn.ReLU(), nn.ConvTranspose2d(c.hidden, c.hidden, 4, stride=2, padding=1)]
        dec += [nn.ReLU(), nn.Conv2d(c.hidden, c.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def _check_images(self, images: Tensor) -> None:
        c = self.config
        if images.dim() != 4 or images.shape[1] != c.in_channels:
            raise ValueError(
                f"VQVAE expects images of shape (B, {c.in_channels}, H, W), got {tuple(images.shape)}"
            )
        H, W = images.shape[-2:]
        if H % c.downsample or W % c.downsample:
            raise ValueError(f"VQVAE: image size {H}x{W} is not divisible by downsample={c.downsample}")
        if not images.is_floating_point():
            raise TypeError(f"VQVAE expects float images in [0, 1], got dtype {images.dtype}")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-4 or hi > 1 + 1e-4:
            raise ValueError(f"VQVAE expects images in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")

    def _encode_z(self, images: Tensor) -> Tensor:
        self._check_images(images)
        return self.encoder(images * 2.0 - 1.0)  # centred input; decode_latent undoes it

    def encode(self, images: Tensor) -> Tensor:
        """Images (b, c, H, W) in [0, 1] -> code ids (b, h, w) long. Never updates the codebook."""
        z = self._encode_z(images)
        b, d, h, w = z.shape
        ids, _ = self.quantizer.nearest(z.detach().permute(0, 2, 3, 1).reshape(-1, d))
        return ids.view(b, h, w)

    def decode(self, codes: Tensor) -> Tensor:
        """Code ids (b, h, w) -> images (b, c, h * downsample, w * downsample) in [0, 1]."""
        K = self.config.codebook_size
        if codes.dim() != 3 or codes.dtype != torch.long:
            raise ValueError(
                f"VQVAE.decode expects long codes of shape (B, h, w), got {codes.dtype} {tuple(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= K):
            lo, hi = int(codes.min()), int(codes.max())
            raise ValueError(f"VQVAE.decode: codes must be in [0, {K}), got [{lo}, {hi}]")
        q = F.embedding(codes, self.quantizer.embed).permute(0, 3, 1, 2)
        return self.decode_latent(q).clamp(0.0, 1.0)

    def decode_latent(self, q: Tensor) -> Tensor:
        """Quantised vectors (b, d, h, w) -> unclamped pixel estimates (about [0, 1])."""
        return self.decoder(q) * 0.5 + 0.5  # inverse of the encoder's 2 x - 1

    def forward(self, images: Tensor) -> VQOutput:
        z = self._encode_z(images)
        q, codes, commitment = self.quantizer(z)
        recon = self.decode_latent(q)
        l2 = F.mse_loss(recon, images)  # Eq. 15
        loss = l2 + self.config.beta * commitment
        return VQOutput(recon.clamp(0.0, 1.0), codes, {"loss": loss, "l2": l2, "commitment": commitment})

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (DESIGN.md §8) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "config": dataclasses.asdict(self.config)}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        state = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        return directory

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> VQVAE:
        """Read what :meth:`save` wrote; any missing file, key or shape is an error naming it."""
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"VQVAE.load: missing {p} (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
        meta = json.loads(cfg_path.read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
            raise ValueError(f"VQVAE.load: {cfg_path} is not a {FORMAT} config (needs 'format' and 'config' keys)")
        fields = {f.name for f in dataclasses.fields(VQConfig)}
        unknown = set(meta["config"]) - fields
        if unknown:
            raise ValueError(
                f"VQVAE.load: {cfg_path} has unknown config keys {sorted(unknown)}; valid: {sorted(fields)}"
            )
        model = cls(VQConfig(**meta["config"]))
        state = load_file(str(w_path), device=str(map_location))
        own = model.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"VQVAE.load: {w_path} does not match {cfg_path}: missing {missing}, unexpected {unexpected}"
            )
        bad = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(v.shape)}"
               for k, v in own.items() if state[k].shape != v.shape]
        if bad:
            raise ValueError(f"VQVAE.load: {w_path} does not match {cfg_path}: " + "; ".join(bad))
        model.load_state_dict(state)
        return model.eval()


@torch.no_grad()
def reconstructions(vq: VQVAE, images: Tensor, batch_size: int = 256) -> Tensor:
    """``images`` (N, c, H, W) in [0, 1] through the codes and back: what the diffusion model can ever draw."""
    was_training = vq.training
    vq.eval()
    out = torch.cat([vq.decode(vq.encode(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])
    vq.train(was_training)
    return out


def psnr(reconstructed: Tensor, images: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (peak 1), over the whole batch."""
    mse = float((reconstructed - images).pow(2).mean())
    return float("inf") if mse == 0.0 else -10.0 * math.log10(mse)


def codebook_usage(codes: Tensor, codebook_size: int) -> dict[str, float]:
    """How much of the codebook ``codes`` use: ``perplexity`` (exp of the code
    entropy; K if uniform, 1 if one code) and ``used_fraction`` (distinct codes / K)."""
    if codes.dtype != torch.long:
        raise TypeError(f"codebook_usage expects long code ids, got {codes.dtype}")
    counts = torch.bincount(codes.flatten(), minlength=codebook_size).double()
    if counts.numel() > codebook_size:
        raise ValueError(f"codebook_usage: code {int(codes.max())} out of range for codebook_size {codebook_size}")
    p = counts / counts.sum().clamp_min(1.0)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
    return {"perplexity": float(entropy.exp()), "used_fraction": float((counts > 0).sum()) / codebook_size}


def _as_image_batch(source: Any, index: Tensor) -> Tensor:
    """Images (b, c, H, W) from a tensor (N, c, H, W) or from a dataset of Samples / tensors."""
    if isinstance(source, Tensor):
        return source[index]
    items = [source[int(i)] for i in index]
    images = [it.image if hasattr(it, "image") else it for it in items]
    if any(not isinstance(im, Tensor) for im in images):
        raise TypeError("train_vq: dataset items must be image tensors (C, H, W) or Samples with .image")
    return torch.stack(images)


def train_vq(
    model: VQVAE,
    images_or_dataset: Any,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place with AdamW on random minibatches; return one dict per step.

    ``images_or_dataset`` is a tensor (N, c, H, W) in [0, 1] or anything with
    ``len`` and ``[i]`` returning an image tensor or a Sample. Constant learning
    rate: on 16x16 coloured squares (400 and 800 steps, two seeds) a cosine decay
    to 10% ended with a 1.2-2.5x *higher* held-out L2, since the encoder is still
    chasing a moving EMA codebook when the rate has gone. No weight decay
    (DESIGN.md §8). The RNG is forked and seeded, so a run is reproducible on CPU
    and leaves the caller's RNG untouched.
    """
    n = len(images_or_dataset)
    if n == 0 or steps < 1 or batch_size < 1:
        raise ValueError(
            f"train_vq needs data, steps >= 1 and batch_size >= 1; got N={n}, steps={steps}, batch_size={batch_size}"
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.train()
    history: list[dict[str, float]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        bar = tqdm(range(steps), desc="vq-vae", disable=not progress)
        for step in bar:
            index = torch.randint(n, (batch_size,))
            images = _as_image_batch(images_or_dataset, index).to(device)
            out = model(images)
            opt.zero_grad(set_to_none=True)
            out.losses["loss"].backward()
            opt.step()
            usage = codebook_usage(out.codes, model.config.codebook_size)
            record = {"step": float(step), **{k: float(v.detach()) for k, v in out.losses.items()}, **usage}
            history.append(record)
            bar.set_postfix(l2=f"{record['l2']:.4f}", ppl=f"{usage['perplexity']:.0f}")
    model.train(was_training)
    return history
