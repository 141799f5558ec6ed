"""Stage 0 of a run: the dataset, its tokenizers, and the data as id tensors (DESIGN.md §1.1, §6).

For ``data.name``:

* ``shapesworld`` (generated at the difficulty ``data.level``; easy and medium
  need ``layout.image_size`` 32: :func:`check_level_image_size`), ``digits``
  (scikit-learn's bundled 8x8 digits), ``moving-digits`` (clips of
  ``layout.frames`` frames of those digits bouncing on a ``layout.image_size``
  canvas, for DiM video): built in, nothing to download.
* ``imagefolder``, ``coco``, ``captionfolder``, ``vqav2``, ``chat``: local files in the formats of
  :mod:`mdm.data.formats`, given by ``data.path`` (the class folder, the
  annotations JSON, the folder of images and ``metadata.jsonl``, the questions JSON, the chat JSONL),
  ``data.images`` (the images folder) and
  for VQAv2 ``data.annotations``. A chat dialogue trains text->text: its last reply is the answer
  (:func:`mdm.data.formats.text_to_text_sample`).

The SentencePiece tokenizer is trained on the training texts and the VQ-VAE on
the training images (none on the continuous path, ``layout.image_tokens = pixels``,
where images are cut into raw pixel patches), then both are saved in the run folder; a later run (or a
resumed one) in the same folder loads them instead of training again, so the
ids a checkpoint was trained on never change under it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from mdm.checkpoint import has_checkpoint
from mdm.config import ConfigError, MDMConfig
from mdm.config.data import VQ_BATCH
from mdm.data.sample import Sample
from mdm.data.text_tokenizer import TextTokenizer, vocabulary_report
from mdm.nn.vq import VQConfig, VQVAE, psnr, reconstructions, train_vq
from mdm.tasks import TokenizedData, tokenize_samples
from mdm.training.stage0_files import clear_interrupted, load_stage0, save_stage0

BUILTIN_DATA = ("shapesworld", "digits", "moving-digits")
FILE_DATA = ("imagefolder", "coco", "captionfolder", "vqav2", "chat")


@dataclass
class PreparedData:
    tokenizer: TextTokenizer | None
    vq: VQVAE | None
    train: TokenizedData  # or a data mixture's mdm.training.mixture.Mixture, which answers the same questions
    text_lens: dict[str, int]
    samples: list[Sample]


def load_samples(config: MDMConfig, split: str = "train") -> list[Sample]:
    """The samples of ``config.data`` (a list; the built-in sets are small enough to hold)."""
    data, size = config.data, config.layout.image_size
    if data.name == "mixture":
        raise ValueError("data.name mixture reads several sources, not one list of samples: "
                         "mdm.training.mixture.prepare_mixture prepares them")
    if data.name in BUILTIN_DATA:
        from mdm.data.registry import load_builtin

        if data.name == "shapesworld":
            n = data.train_size if split == "train" else 500
        elif data.name == "moving-digits":
            if config.layout.frames < 2:
                raise ValueError(f"data.name moving-digits is video: set layout.frames to the clip length (>= 2), "
                                 f"got {config.layout.frames}")
            n, split = (data.train_size, "train") if split == "train" else (500, "test")
        else:  # digits: the held-out split is its test split
            n, split = 0, "train" if split == "train" else "test"
        try:
            ds = load_builtin(data.name, split, size=n, seed=data.seed, image_size=size,
                              channels=config.layout.image_channels, frames=config.layout.frames,
                              motion_step=data.motion_step, digit_size=data.digit_size,
                              question_kinds=tuple(data.question_kinds), level=data.level)
        except ValueError as e:
            if data.name != "moving-digits":
                raise
            # the dataset's own terms, said in the config's keys
            raise ValueError(f"data.name moving-digits with layout.image_size = {size}, data.digit_size = "
                             f"{data.digit_size} (0: half the canvas) and data.motion_step = {data.motion_step} "
                             f"(it must divide layout.image_size - digit size): {e}") from e
        return [ds[i] for i in range(len(ds))]
    if data.name in FILE_DATA:
        from mdm.data import formats

        if not data.path:
            raise ValueError(f"data.name {data.name!r} reads local files: set data.path")
        if data.name == "imagefolder":
            ds = formats.ImageFolderDataset(data.path, size)
        elif data.name == "coco":
            ds = formats.CocoCaptionsDataset(data.path, data.images, size)
        elif data.name == "captionfolder":  # one sample a caption: every caption trains equally often
            ds = formats.CaptionFolderDataset(data.path, size, per_caption=True)
        elif data.name == "chat":
            ds = formats.ChatJsonlDataset(data.path)
        else:
            ds = formats.VQAv2Dataset(data.path, data.annotations or None, data.images, size)
        index = range(len(ds))
        if data.train_size and data.train_size < len(ds):  # a seeded random subset: folders are sorted by class
            index = sorted(torch.randperm(len(ds), generator=torch.Generator().manual_seed(data.seed))
                           [:data.train_size].tolist())
        if data.name == "chat":
            return [formats.text_to_text_sample(ds[i]) for i in index]
        return _decodable(ds, index, data.name)
    raise ValueError(f"data.name {data.name!r} is not one of {', '.join(BUILTIN_DATA + FILE_DATA)}")


def _decodable(ds, index, name: str) -> list[Sample]:
    """The samples of ``ds`` at ``index`` whose images decode. A file can pass the dataset's eager check (PNG
    checksums) and still fail to decode; it is skipped and counted with the files that check skipped."""
    samples, failed = [], []
    for i in index:
        try:
            samples.append(ds[i])
        except OSError as e:  # load_image names the file
            failed.append(str(e))
    if failed:
        ds.skipped_files = list(getattr(ds, "skipped_files", [])) + [(msg, "decode") for msg in failed]
        warnings.warn(f"data {name!r}: skipped {len(failed)} of {len(failed) + len(samples)} images that failed to "
                      f"decode, first: {failed[0]}", stacklevel=3)
    return samples


def check_level_image_size(config: MDMConfig) -> None:
    """Refuse to train ShapesWorld at an image size other than its level's (DESIGN.md §6).

    Easy and medium are made for 32 px: their object sizes and fixed places, and
    the referee's reading of them, are in pixels. ``hard`` keeps the generator's
    old freedom to draw at any ``layout.image_size`` (its preset draws 16 px; the
    ``small`` and ``base`` configs draw larger scenes). Held-out scenes of an
    existing checkpoint are still drawn at its ``layout.image_size``.
    """
    from mdm.data.shapesworld_levels import LEVELS, level_image_size

    if "shapesworld" not in config.data.kinds or config.data.level == "hard":
        return
    want = level_image_size(config.data.level)
    if config.layout.image_size != want:
        fitting = [name for name in LEVELS if level_image_size(name) == config.layout.image_size]
        raise ConfigError(f"layout.image_size = {config.layout.image_size}, but data.level {config.data.level} "
                          f"draws ShapesWorld at {want} px: set layout.image_size={want}"
                          + (f" or data.level to {' or '.join(fitting)}" if fitting else ""))


def referee_kwargs(config: MDMConfig) -> dict[str, Any]:
    """The referee's keyword arguments for a model of ``config``: its ShapesWorld level's position grid
    (:func:`mdm.evaluation.judges.referee.referee_options`; empty for ``hard`` and for other data)."""
    if config.data.name != "shapesworld":
        return {}
    from mdm.evaluation.judges.referee import referee_options
    from mdm.data.shapesworld import level_config

    return referee_options(level_config(config.data.level))


def check_clips(samples: list[Sample], config: MDMConfig, source: str) -> None:
    """Video data and ``layout.frames`` agree: clips of ``frames`` frames of ``image_size`` pixels, or images
    with ``frames = 1``; otherwise an error naming the sample, what it has and what the config expects."""
    frames, size, c = config.layout.frames, config.layout.image_size, config.layout.image_channels
    for i, s in enumerate(samples):
        if s.video is None:
            if frames > 1:
                raise ValueError(f"{source}: layout.frames = {frames} asks for video clips, but sample {i} has "
                                 f"none (data {config.data.name!r}); use video data (moving-digits) or frames: 1")
            continue
        if frames == 1:
            raise ValueError(f"{source}: sample {i} is a video clip but layout.frames = 1; set layout.frames to "
                             f"its {s.video.shape[0]} frames (a video config such as moving-digits)")
        if tuple(s.video.shape) != (frames, c, size, size):
            raise ValueError(f"{source}: sample {i} is a clip of shape {tuple(s.video.shape)} (frames, channels, "
                             f"height, width), expected {(frames, c, size, size)} from layout.frames, "
                             f"layout.image_channels and layout.image_size")


def _train_tokenizer(corpus: list[str], config: MDMConfig, folder: Path | None, log=print) -> TextTokenizer | None:
    """The ``data.tokenizer`` SentencePiece model of the training texts, with one log line of how it fits them
    (pieces, words kept whole) and a warning line, naming the cause and the remedy, when it fits badly."""
    if not corpus:
        return None
    data = config.data
    with warnings.catch_warnings():  # said below in the run's log, in the config's keys
        warnings.simplefilter("ignore")
        tokenizer = TextTokenizer.train(corpus, data.vocab_size, character_coverage=1.0, model_type=data.tokenizer)
    summary, warning = vocabulary_report(tokenizer, corpus, data.vocab_size)
    log(f"text tokenizer: trained SentencePiece {tokenizer.model_type} on {len(corpus)} texts, {summary}")
    if warning is not None:
        log(f"warning: data.tokenizer={data.tokenizer}, data.vocab_size={data.vocab_size}: the corpus of training "
            f"texts {warning}")
    if folder is not None:
        save_stage0(folder, config, tokenizer.save)
    return tokenizer


def _train_vq(samples: list[Sample], config: MDMConfig, folder: Path | None, progress: bool,
              log=print) -> VQVAE | None:
    images = [s.image for s in samples if s.image is not None] + [f for s in samples if s.video is not None
                                                                  for f in s.video]  # a clip's frames
    if not images:
        return None
    return train_image_tokenizer(torch.stack(images), samples, config, folder, progress, log)


def train_image_tokenizer(images: Any, samples: Iterable[Sample], config: MDMConfig, folder: Path | None,
                          progress: bool, log=print, seed: int | None = None) -> VQVAE:
    """Stage 0's VQ-VAE trained on ``images`` (a tensor, or a dataset read on access: :func:`mdm.nn.vq.train_vq`),
    its fidelity measured on ``samples`` (:func:`vq_fidelity`) and, given a run ``folder``, saved there.
    ``seed``: its initialisation and batches; default ``data.seed``, the seed of the data it codes."""
    seed = config.data.seed if seed is None else seed
    torch.manual_seed(seed)
    vq = VQVAE(VQConfig(in_channels=config.layout.image_channels, downsample=config.layout.vq_factor,
                        codebook_size=config.data.codebook_size, local=config.data.vq_local))
    train_vq(vq, images, steps=config.data.vq_steps, batch_size=VQ_BATCH, lr=1e-3, seed=seed,
             progress=progress)
    vq.eval()
    report = vq_fidelity(vq, config, samples, log)
    if folder is not None:
        def write(tmp: Path) -> None:
            vq.save(tmp)
            (tmp / FIDELITY_FILE).write_text(json.dumps(report, indent=2) + "\n")

        save_stage0(folder, config, write)
    return vq


FIDELITY_FILE = "fidelity.json"
FIDELITY_SCENES = 256
REFEREE_FLOOR = 0.95


def vq_fidelity(vq: VQVAE, config: MDMConfig, samples: Iterable[Sample], log=print) -> dict[str, float]:
    """How much of held-out images survives the VQ-VAE: PSNR of the reconstructions and, on ShapesWorld, the
    share of scenes whose reconstruction the referee reads exactly right. Logged, with a warning below 95%.

    Why at stage 0: the diffusion model learns the codes, never the pixels, so whatever the codes lose no
    amount of training brings back. A 600-step VQ-VAE on 32 px ShapesWorld once mapped red and green to one
    olive code (the referee read 36% of its reconstructions right) and every colour score stayed at chance.
    Held out: the built-in data's held-out split; a user's files have none, so the first training images.
    """
    builtin = config.data.name in BUILTIN_DATA
    held_out = load_samples(config, "val") if builtin else list(samples)
    scenes = [s for s in held_out if s.image is not None][:FIDELITY_SCENES]
    images = [s.image for s in scenes] or [f for s in held_out if s.video is not None for f in s.video]
    if not images:
        return {}
    images = torch.stack(images[:FIDELITY_SCENES])
    rec = reconstructions(vq, images)
    report = {"images": len(images), "psnr_db": round(psnr(rec, images), 2)}
    which = "held-out" if builtin else "training"
    line = f"image tokenizer: {len(images)} {which} images reconstructed at {report['psnr_db']:.1f} dB PSNR"
    if config.data.name == "shapesworld":
        from mdm.evaluation.judges.referee import score_generation

        kw = referee_kwargs(config)
        right = [score_generation(r, s.meta["objects"], **kw)["all"] for r, s in zip(rec, scenes)]
        report["referee_all_right"] = round(sum(right) / len(right), 4)
        line += f"; the referee reads {100 * report['referee_all_right']:.1f}% of them exactly right"
    log(line)
    if report.get("referee_all_right", 1.0) < REFEREE_FLOOR:
        remedy = (f"data.codebook_size (now {config.data.codebook_size})" if config.data.vq_local
                  else "set data.vq_local=true")
        log(f"warning: the VQ-VAE loses what the referee judges ({100 * report['referee_all_right']:.1f}% < "
            f"{100 * REFEREE_FLOOR:.0f}%): no diffusion training recovers it. Raise data.vq_steps (now "
            f"{config.data.vq_steps}) or {remedy}, in a new --out folder")
    return report


def text_sizes(samples: list[Sample], tokenizer: TextTokenizer) -> dict[str, list[tuple[int, str]]]:
    """Per role, ``(tokens with eos, text)`` of every text the run trains on: a sample's first text of
    that role, as :func:`mdm.tasks.tokenize_samples` encodes it."""
    roles = sorted({t.role.value for s in samples for t in s.texts})
    texts = {role: [s.text(role) for s in samples if s.text(role) is not None] for role in roles}
    return {role: [(1 + len(tokenizer.encode(t)), t) for t in ts] for role, ts in texts.items()}


def text_lengths(sizes: dict[str, list[tuple[int, str]]], config: MDMConfig) -> dict[str, int]:
    """``data.text_lens`` for the roles the data has; a role it omits gets its longest text (eos included)."""
    return {role: int(config.data.text_lens[role]) if role in config.data.text_lens else max(sizes[role])[0]
            for role in sizes}


def stage0_text_tokenizer(config: MDMConfig, folder: Path | None, corpus: Callable[[], list[str]],
                          log=print) -> TextTokenizer | None:
    """The run folder's SentencePiece tokenizer, or one trained on ``corpus()`` (None without texts) and saved
    there. Also clears what a killed stage 0 left (:func:`clear_interrupted`): call it first. A folder with a
    checkpoint is a resumed run's, whose config matched the checkpoint's: its stage 0 is trusted."""
    tok_dir = folder / "tokenizer" if folder is not None else None
    if folder is not None:
        clear_interrupted(folder)
    if tok_dir is not None and tok_dir.is_dir():
        tokenizer = load_stage0(tok_dir, config, TextTokenizer.load, ("tokenizer.model",), has_checkpoint(folder))
        log(f"text tokenizer: loaded {tok_dir} (SentencePiece {tokenizer.model_type}, {tokenizer.vocab_size} pieces)")
        return tokenizer
    return _train_tokenizer(corpus(), config, tok_dir, log)


def stage0_image_tokenizer(config: MDMConfig, folder: Path | None, train: Callable[[Path | None], VQVAE | None],
                           log=print) -> VQVAE | None:
    """The run folder's VQ-VAE, or ``train(vq folder)``'s (None without images); None on the continuous path."""
    vq_dir = folder / "vq" if folder is not None else None
    if config.layout.continuous_images:
        patch = config.layout.vq_factor
        log(f"image tokens: raw {patch}x{patch} pixel patches (the continuous path, no VQ-VAE)")
        return None
    if vq_dir is not None and vq_dir.is_dir():
        vq = load_stage0(vq_dir, config, VQVAE.load, ("config.json", "model.safetensors"), has_checkpoint(folder))
        log(f"image tokenizer: loaded {vq_dir}")
        return vq
    log(f"image tokenizer: training a VQ-VAE ({config.data.codebook_size} codes, {config.data.vq_steps} steps)")
    return train(vq_dir)


def prepare_data(config: MDMConfig, folder: str | Path | None = None, progress: bool = True,
                 log=print) -> PreparedData:
    """Samples, tokenizers (trained, or loaded from ``folder``) and the tokenized training set.

    One source; a mixture (``data.name: mixture``) is :func:`mdm.training.mixture.prepare_mixture`'s.
    """
    folder = Path(folder) if folder is not None else None
    check_level_image_size(config)
    samples = load_samples(config, "train")
    if not samples:
        raise ValueError(f"data {config.data.name!r} has no training samples")
    if config.train.batch_size > len(samples):  # before the tokenizers train: a batch this size cannot be drawn
        raise ValueError(f"train.batch_size = {config.train.batch_size} is larger than the {len(samples)} training "
                         f"samples of data {config.data.name!r}: set train.batch_size <= {len(samples)}"
                         + (" or raise data.train_size" if config.data.name in BUILTIN_DATA else ""))
    check_clips(samples, config, f"data {config.data.name!r}")
    tokenizer = stage0_text_tokenizer(config, folder, lambda: [t.text for s in samples for t in s.texts], log)
    lens = {}
    if tokenizer is not None:  # before the VQ-VAE's training, so a bad length fails in seconds
        with warnings.catch_warnings():  # a word model's unk words: stage 0's tokenizer report has said them
            warnings.simplefilter("ignore")
            sizes = text_sizes(samples, tokenizer)
        lens = text_lengths(sizes, config)
        check_text_lengths(sizes, lens, log)
    vq = stage0_image_tokenizer(config, folder, lambda vq_dir: _train_vq(samples, config, vq_dir, progress, log),
                                log)
    pixel_patch = config.layout.vq_factor if config.layout.continuous_images else None
    with warnings.catch_warnings():  # check_text_lengths has said, per role, what is truncated
        warnings.simplefilter("ignore")
        train = tokenize_samples(samples, tokenizer, vq, lens, pixel_patch=pixel_patch)
    return PreparedData(tokenizer, vq, train, lens, samples)


def check_text_lengths(sizes: dict[str, list[tuple[int, str]]], lens: dict[str, int], log=print) -> None:
    """Say, per role, how many training texts ``data.text_lens`` truncates; refuse truncated answers.

    An answer is scored by exact match, so a truncated one trains a wrong target
    (a small tokenizer once split "zero" into 4 pieces, and with eos every "zero"
    trained as "zer" under ``text_lens.answer = 4``): that is a ``ValueError`` naming
    ``data.text_lens.answer`` and the length that fits. A caption, question or scene
    cut short still says most of itself, so those (and chat turns) are truncated with
    one warning per role naming the longest text. ``sizes`` is :func:`text_sizes`.
    """
    for role, length in sorted(lens.items()):
        over = [(n, text) for n, text in sizes[role] if n > length]
        if not over:
            continue
        n, text = max(over)
        shown = text if len(text) <= 40 else text[:40] + "..."
        what = (f"{len(over)} of {len(sizes[role])} training {role} texts are longer than data.text_lens.{role} = "
                f"{length} tokens (the longest, {shown!r}, is {n} with eos)")
        if role == "answer":
            raise ValueError(f"{what}; a truncated answer trains a wrong target: set data.text_lens.answer >= {n} "
                             f"(in a new --out folder: a resumed run keeps its data settings)")
        log(f"warning: {what}; they are truncated")
