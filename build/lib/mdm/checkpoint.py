"""Checkpoint folders: everything to sample from a model, and everything to resume its run.

One folder (DESIGN.md §8)::

    config.json            format tag, the MDMConfig, vocab sizes, text lengths, step, the trained tasks
    model.safetensors      the trained weights
    ema.safetensors        the EMA weights (used for sampling when present)
    tokenizer/             SentencePiece model (text)
    vq/                    the VQ-VAE stage 0 (images)
    trainer.safetensors    optimizer moments and the random generators' states (with ema: resumption)
    trainer.json           optimizer hyper-parameters, step, the partial log window

Only safetensors and JSON are read: a pickle can run code on load, so a pickle
(``.pt``/``.bin``, or one renamed to ``.safetensors``) is refused by name.

Writes are atomic: the new folder is written beside the old one as
``NAME.saving`` and swapped in with two renames (old -> ``NAME.previous``, new ->
``NAME``). A kill at any moment leaves either the old or the new checkpoint whole;
:func:`load_checkpoint` falls back to ``NAME.previous`` if the kill came between
the two renames.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from mdm.config import ConfigError, MDMConfig, to_dict
from mdm.config.files import from_saved_dict
from mdm.data.text_tokenizer import TextTokenizer
from mdm.nn.vq import VQVAE
from mdm.nn.network import MDMNetwork

FORMAT = "mdm-checkpoint/1"
CONFIG_FILE, MODEL_FILE, EMA_FILE = "config.json", "model.safetensors", "ema.safetensors"
TRAINER_TENSORS, TRAINER_JSON = "trainer.safetensors", "trainer.json"
TOKENIZER_DIR, VQ_DIR = "tokenizer", "vq"
CHECKPOINT_DIR = "checkpoint"  # a run folder's checkpoint (mdm.training.run)
# Sections that define the network's shape and maths: a resumed run must not change them.
MODEL_SECTIONS = ("backbone", "layout", "vae", "diffusion")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used, with the file and what was expected."""


@dataclass
class Checkpoint:
    """What a checkpoint folder holds; ``trainer`` is None for a weights-only (exported) folder."""

    config: MDMConfig
    network: MDMNetwork
    ema_state: dict[str, Tensor] | None
    tokenizer: TextTokenizer | None
    vq: VQVAE | None
    text_lens: dict[str, int]
    step: int
    trainer: dict | None = None  # {"tensors": {...}, "meta": {...}} for resumption
    folder: Path = field(default_factory=Path)
    trained_tasks: list[str] | None = None  # the tasks the weights were trained on (None: not recorded)


def _plain_state(module_or_state) -> dict[str, Tensor]:
    state = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") else module_or_state
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _write_folder(tmp: Path, *, config: MDMConfig, network: MDMNetwork, model_state, ema_state, tokenizer, vq,
                  text_lens, step: int, trainer_tensors: dict[str, Tensor] | None, trainer_meta: dict | None,
                  trained_tasks: list[str] | None) -> None:
    tmp.mkdir(parents=True)
    meta = {"format": FORMAT, "step": step, "config": to_dict(config),
            "vocab_sizes": {m.value: v for m, v in network.vocab_sizes.items()}, "text_lens": dict(text_lens)}
    if trained_tasks is not None:
        meta["trained_tasks"] = list(trained_tasks)
    save_file(_plain_state(network if model_state is None else model_state), str(tmp / MODEL_FILE))
    if ema_state is not None:
        save_file(_plain_state(ema_state), str(tmp / EMA_FILE))
    if tokenizer is not None:
        tokenizer.save(tmp / TOKENIZER_DIR)
    if vq is not None:
        vq.save(tmp / VQ_DIR)
    if trainer_tensors is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in trainer_tensors.items()}, str(tmp / TRAINER_TENSORS))
        (tmp / TRAINER_JSON).write_text(json.dumps(trainer_meta or {}, indent=1) + "\n")
    # config.json last: a folder with it is complete even if a rename below is interrupted.
    (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    fsync_files(tmp)  # flush to disk before the rename makes the folder visible


def fsync_files(folder: Path) -> None:
    """Flush every file under ``folder`` to disk, so a rename that publishes it never shows half a file."""
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def checkpoint_folder(run_or_checkpoint: str | Path) -> Path:
    """The checkpoint of a run folder, or the folder itself if it is a checkpoint."""
    path = Path(run_or_checkpoint)
    for candidate in (path / CHECKPOINT_DIR, path / f"{CHECKPOINT_DIR}.previous"):
        if (candidate / "config.json").is_file():
            return path / CHECKPOINT_DIR
    return path


def has_checkpoint(folder: str | Path) -> bool:
    """Whether a run folder holds a checkpoint (or the previous one, after a kill between two renames)."""
    folder = Path(folder)
    return any((folder / name / "config.json").is_file() for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.previous"))


def make_writable_folder(folder: Path, what: str, error: type[Exception] = ValueError) -> None:
    """Create ``folder`` (with parents) and check it is writable; ``error`` names ``what`` it is otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create {what} {folder}: {e.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise error(f"{what} {folder} is not writable")


def save_checkpoint(folder: str | Path, *, config: MDMConfig, network: MDMNetwork,
                    model_state: dict[str, Tensor] | None = None, ema_state: dict[str, Tensor] | None = None,
                    tokenizer: TextTokenizer | None = None, vq: VQVAE | None = None,
                    text_lens: dict[str, int] | None = None, step: int = 0,
                    trainer_tensors: dict[str, Tensor] | None = None, trainer_meta: dict | None = None,
                    trained_tasks: list[str] | None = None) -> Path:
    """Write a checkpoint folder atomically (see the module docstring); returns its path.

    ``model_state``: the weights to write when not ``network.state_dict()`` (gathered from shards).
    ``trained_tasks``: the tasks the weights learned, so that sampling another one can be refused.
    """
    folder = Path(folder)
    parent = folder.parent
    make_writable_folder(parent, "the checkpoint's parent folder", CheckpointError)
    tmp, previous = parent / f"{folder.name}.saving", parent / f"{folder.name}.previous"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_folder(tmp, config=config, network=network, model_state=model_state, ema_state=ema_state,
                      tokenizer=tokenizer, vq=vq, text_lens=text_lens or {}, step=step,
                      trainer_tensors=trainer_tensors, trainer_meta=trainer_meta, trained_tasks=trained_tasks)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.rename(folder, previous)
    # (if only NAME.previous exists, a save was killed between the renames: keep it until the new one is in place)
    os.rename(tmp, folder)
    fsync_dir(parent)
    shutil.rmtree(previous, ignore_errors=True)
    return folder


def fsync_dir(path: Path) -> None:
    """Make the renames durable (a directory's entries are flushed through the directory itself)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        with open(path, "rb") as fh:
            head = fh.read(2)
        kind = ("a pickle / torch.save file (refused: loading a pickle can run arbitrary code)"
                if head[:1] == b"\x80" or head == b"PK" else "not a safetensors file")
        raise CheckpointError(f"{path}: {kind}; expected safetensors ({e})") from None


def _resolve(folder: Path) -> Path:
    if (folder / CONFIG_FILE).is_file():
        return folder
    previous = folder.parent / f"{folder.name}.previous"
    if (previous / CONFIG_FILE).is_file():
        warnings.warn(f"{folder} is incomplete (a save was interrupted); using {previous}", stacklevel=3)
        return previous
    if not folder.exists():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    pickles = sorted(p.name for p in folder.glob("*") if p.suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl"))
    hint = f"; found {pickles}, which are pickles and are refused (they can run code)" if pickles else ""
    raise CheckpointError(f"{folder} is not an MDM checkpoint: it has no {CONFIG_FILE}{hint}")


def read_config(folder: str | Path) -> tuple[MDMConfig, dict]:
    """The MDMConfig and the raw ``config.json`` of a checkpoint folder."""
    folder = _resolve(Path(folder))
    path = folder / CONFIG_FILE
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an MDM checkpoint config (expected \"format\": \"{FORMAT}\")")
    for key in ("config", "vocab_sizes", "text_lens", "step"):
        if key not in meta:
            raise CheckpointError(f"{path}: missing key {key!r}")
    try:
        config = from_saved_dict(meta["config"], str(path))  # saved before a field was added: its old value
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    return config, meta


def config_differences(a: MDMConfig, b: MDMConfig, sections=MODEL_SECTIONS) -> list[str]:
    """``section.key: a != b`` for every differing key of ``sections``."""
    da, db = to_dict(a), to_dict(b)
    out = []
    for section in sections:
        for key in sorted(set(da[section]) | set(db[section])):
            if da[section].get(key) != db[section].get(key):
                out.append(f"{section}.{key}: {da[section].get(key)!r} != {db[section].get(key)!r}")
    return out


def load_checkpoint(folder: str | Path, expect_config: MDMConfig | None = None,
                    map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a folder written by :func:`save_checkpoint`.

    ``expect_config``: the config of the run that wants these weights; a difference
    in a model section (backbone, layout, vae, diffusion) is an error naming the keys.
    """
    folder = _resolve(Path(folder))
    config, meta = read_config(folder)
    if expect_config is not None:
        diff = config_differences(expect_config, config)
        if diff:
            raise CheckpointError(f"{folder}: its config does not match the requested one (requested != "
                                  f"checkpoint): " + "; ".join(diff))
    network = MDMNetwork(config.backbone, config.layout, config.vae, meta["vocab_sizes"],
                         config.diffusion.masked_modalities(), config.diffusion.self_conditioning,
                         config.diffusion.warped_modalities())
    state = _read_safetensors(folder / MODEL_FILE)
    _load_state(network, state, folder / MODEL_FILE)
    _check_finite(state, folder / MODEL_FILE)
    ema_state = None
    if (folder / EMA_FILE).exists():
        ema_state = _read_safetensors(folder / EMA_FILE)
        _check_state(network.state_dict(), ema_state, folder / EMA_FILE)  # same shapes as the model
        _check_finite(ema_state, folder / EMA_FILE)
    tokenizer = TextTokenizer.load(folder / TOKENIZER_DIR) if (folder / TOKENIZER_DIR).is_dir() else None
    vq = VQVAE.load(folder / VQ_DIR) if (folder / VQ_DIR).is_dir() else None
    trainer = None
    if (folder / TRAINER_TENSORS).exists():
        path = folder / TRAINER_JSON
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (it is written with {TRAINER_TENSORS}; the checkpoint is "
                                  f"incomplete)")
        try:
            trainer = {"tensors": _read_safetensors(folder / TRAINER_TENSORS), "meta": json.loads(path.read_text())}
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    network.to(map_location)
    return Checkpoint(config, network, ema_state, tokenizer, vq, {k: int(v) for k, v in meta["text_lens"].items()},
                      int(meta["step"]), trainer, folder, meta.get("trained_tasks"))


def _load_state(network: MDMNetwork, state: dict[str, Tensor], path: Path) -> None:
    _check_state(network.state_dict(), state, path)
    network.load_state_dict(state)


def _check_finite(state: dict[str, Tensor], path: Path) -> None:
    """Refuse weights holding NaN or inf: they sample blank images without any other sign of trouble."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} of {len(state)} tensors hold NaN or inf values (first: "
                              f"{bad[0]}); these weights cannot sample")


def _check_state(own: dict[str, Tensor], state: dict[str, Tensor], path: Path) -> None:
    """Every key of ``own`` in ``state`` with its shape, and nothing else; an error names the differences."""
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(v.shape)}"
           for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or bad:
        parts = ([f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}"] if missing else []) + \
                ([f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"] if unexpected else []) + bad[:5]
        raise CheckpointError(f"{path} does not match the config.json beside it: " + "; ".join(parts))
