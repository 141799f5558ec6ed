"""The diffusion processes by name: ``diffusion.text_process`` / ``diffusion.image_process`` pick one.

A new process is a file implementing :class:`mdm.diffusion.base.DiffusionProcess` and one line here.
Pixel patches (``layout.image_tokens = pixels``) always take the noise-MSE process: they have no states.
"""

from __future__ import annotations

from mdm.config import DiffusionConfig
from mdm.diffusion.absorbing import Absorbing
from mdm.diffusion.base import DiffusionProcess
from mdm.diffusion.gaussian_latent import GaussianLatent
from mdm.diffusion.gaussian_mse import GaussianMSE
from mdm.nn.layout import Modality

PROCESSES: dict[str, type[DiffusionProcess]] = {
    GaussianLatent.name: GaussianLatent,
    Absorbing.name: Absorbing,
}


def process_name(config: DiffusionConfig, modality: Modality) -> str:
    """The configured process of a modality's state segments."""
    return config.text_process if Modality(modality) is Modality.TEXT else config.image_process


def make_process(config: DiffusionConfig, modality: Modality, continuous: bool = False) -> DiffusionProcess:
    """The process of ``modality``: the configured one, or the noise MSE for continuous tokens."""
    if continuous:
        return GaussianMSE(config, modality)
    name = process_name(config, modality)
    if name not in PROCESSES:
        raise ValueError(f"unknown diffusion process {name!r}; valid: {', '.join(PROCESSES)}")
    return PROCESSES[name](config, modality)
