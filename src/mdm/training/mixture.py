"""A run on a data mixture (``data.name: mixture``): its checks, its stage 0, and the sources its steps draw from.

Every source of ``data.sources`` (:mod:`mdm.data.mixture`) trains the tasks its items allow (COCO and
captioned folders: text->image, captioning, joint; VQAv2: VQA; chat: text->text; class folders: class->image),
and each step draws a source by its weight, then one of its tasks by ``train.task_weights``
(:func:`task_sampler`), then a batch from that source alone.

Stage 0 trains one SentencePiece tokenizer on the texts of every source and one VQ-VAE on the images of every
source. A source of at most ``data.memory_items`` items is then decoded once and held as token ids, as a
single-source run holds its data. A larger one is streamed: its texts are read without their images, the VQ-VAE
draws its images as it trains, and every training batch is decoded from disk and tokenized when drawn, at most
``data.memory_items`` items at a time, so its decoded items are never all in memory (``data.train_size`` still caps
how many it has).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from mdm.config import ConfigError, MDMConfig
from mdm.data.mixture import PARTS, ImageItems, Source, check_files, open_source
from mdm.data.sample import Sample
from mdm.data.text_tokenizer import TextTokenizer
from mdm.nn.vq import VQVAE
from mdm.tasks import Task, TokenizedData, check_task_weights, supported_tasks, tokenize_samples
from mdm.training.prepare import (FIDELITY_SCENES, PreparedData, check_level_image_size, check_text_lengths,
                                  stage0_image_tokenizer, stage0_text_tokenizer, text_lengths, text_sizes,
                                  train_image_tokenizer)


class StreamedSource:
    """A source read from disk as it is drawn: a batch's items are decoded and tokenized ``chunk`` at a time.

    It answers as :class:`mdm.tasks.TokenizedData` does (``len``, ``parts``, ``supports``, ``subset``), so the
    trainer draws from it as from data held in memory. ``text_lens`` holds its own roles only.
    """

    def __init__(self, source: Source, tokenizer: TextTokenizer | None, vq: VQVAE | None, text_lens: dict[str, int],
                 pixel_patch: int | None, chunk: int) -> None:
        self.source, self.tokenizer, self.text_lens, self.chunk = source, tokenizer, text_lens, chunk
        self.vq = vq if source.has_images else None
        self.pixel_patch = pixel_patch if source.has_images else None
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.source)

    def parts(self) -> set[str]:
        return {p for p in self.source.parts if p != "label"}

    def supports(self, task: Task) -> bool:
        return task in supported_tasks(self.source.parts)

    def num_classes(self) -> int:
        return self.source.num_classes()

    def to(self, device: torch.device | str) -> "StreamedSource":
        """This source with its batches moved to ``device`` (they are decoded and tokenized on the CPU)."""
        moved = copy.copy(self)
        moved.device = torch.device(device)
        return moved

    def subset(self, index: Tensor) -> TokenizedData:
        items = index.tolist()
        chunks = [self._tokenized(items[i:i + self.chunk]) for i in range(0, len(items), self.chunk)]
        first = chunks[0]
        return TokenizedData(None if first.codes is None else torch.cat([c.codes for c in chunks]),
                             {role: torch.cat([c.texts[role] for c in chunks]) for role in first.texts},
                             None if first.labels is None else torch.cat([c.labels for c in chunks])
                             ).to(self.device)

    def _tokenized(self, items: list[int]) -> TokenizedData:
        """One chunk, its decoded samples released when this returns."""
        samples = [self.source[i] for i in items]
        with warnings.catch_warnings():  # stage 0 has said, per role, what data.text_lens truncates
            warnings.simplefilter("ignore")
            return tokenize_samples(samples, self.tokenizer, self.vq, self.text_lens, pixel_patch=self.pixel_patch)


@dataclass
class MixtureSource:
    """One source of a run's training data: its name in the log (``0:coco``), weight, and data."""

    name: str
    weight: float
    data: TokenizedData | StreamedSource


class Mixture:
    """A run's training data as weighted sources; the trainer draws a source, a task it supports, then a batch.

    A single-source run's :class:`TokenizedData` is a mixture of one (:meth:`of`).
    """

    def __init__(self, sources: list[MixtureSource]) -> None:
        self.sources = list(sources)

    @classmethod
    def of(cls, data: "TokenizedData | Mixture") -> "Mixture":
        return data if isinstance(data, Mixture) else cls([MixtureSource("data", 1.0, data)])

    def __len__(self) -> int:
        return sum(len(s.data) for s in self.sources)

    def parts(self) -> set[str]:
        return set().union(*(s.data.parts() for s in self.sources))

    def supports(self, task: Task) -> bool:
        return any(s.data.supports(task) for s in self.sources)

    def num_classes(self) -> int:
        return max(s.data.num_classes() for s in self.sources)

    def to(self, device: torch.device | str) -> "Mixture":
        return Mixture([replace(s, data=s.data.to(device)) for s in self.sources])


def task_sampler(data: TokenizedData | Mixture, weights: dict[str, float],
                 generator: torch.Generator) -> Callable[[], tuple[int, Task]]:
    """A function drawing the source and task of each step: a source of ``data`` by its weight, then one of the tasks
    it supports by their ``weights`` (``train.task_weights``).

    Data of one source draws no source, so a single-source run draws its tasks from the generator as it always
    did (and an old run resumes exactly). The trainer (:mod:`mdm.training.loop`) calls it once per step.
    """
    check_task_weights(weights)
    mixture = Mixture.of(data)
    tasks = [[Task(name) for name, w in weights.items() if w > 0 and source.data.supports(Task(name))]
             for source in mixture.sources]
    for source, own in zip(mixture.sources, tasks):
        if not own:
            where = f"source {source.name} of the data" if len(mixture.sources) > 1 else "the data"
            raise ValueError(f"no task of the mixture {weights} is supported by {where} "
                             f"(parts: {sorted(source.data.parts())})")
    task_probs = [torch.tensor([weights[t.value] for t in own], dtype=torch.float64) for own in tasks]
    source_probs = torch.tensor([source.weight for source in mixture.sources], dtype=torch.float64)

    def draw() -> tuple[int, Task]:
        s = 0 if len(tasks) == 1 else int(torch.multinomial(source_probs, 1, generator=generator))
        return s, tasks[s][int(torch.multinomial(task_probs[s], 1, generator=generator))]

    return draw


def check_mixture(config: MDMConfig) -> None:
    """What a mixture needs before any work, each error naming its source by index: its files, a task of
    ``train.task_weights`` its items can train, and RGB images (``layout.image_channels`` 3) where it reads files
    or draws ShapesWorld."""
    check_task_weights(config.train.task_weights)
    trained = {Task(name) for name, w in config.train.drawn_task_weights().items() if w > 0}
    keys = ("train.task_weights with train.curriculum_task_weights" if config.train.curriculum_steps
            else "train.task_weights")
    for i, spec in enumerate(config.data.sources):
        kind, where = spec["kind"], f"data.sources[{i}] ({spec['kind']})"
        check_files(i, spec)
        tasks = supported_tasks(PARTS[kind])
        if not trained & set(tasks):
            raise ConfigError(f"{where} supports none of the tasks {keys} trains "
                              f"({', '.join(sorted(t.value for t in trained)) or 'none'}): its items hold "
                              f"{', '.join(PARTS[kind])}, which train {', '.join(t.value for t in tasks)}")
        if "image" in PARTS[kind] and kind != "digits" and config.layout.image_channels != 3:
            raise ConfigError(f"{where} reads RGB images: layout.image_channels must be 3, got "
                              f"{config.layout.image_channels}")


def prepare_mixture(config: MDMConfig, folder: str | Path | None = None, progress: bool = True,
                    log=print) -> PreparedData:
    """Stage 0 of a mixture (the module docstring says how each source is held): its sources opened and checked,
    one tokenizer and one VQ-VAE over all of them (trained, or loaded from ``folder``), the training data as a
    :class:`Mixture`. ``PreparedData.samples`` is empty: a mixture's items are not one list."""
    folder = Path(folder) if folder is not None else None
    check_mixture(config)
    check_level_image_size(config)
    data, layout = config.data, config.layout
    sources = [open_source(i, data, layout.image_size, layout.image_channels) for i in range(len(data.sources))]
    held = {s.index: _decode_all(s) for s in sources if len(s) <= data.memory_items}
    for s in sources:
        n = len(held.get(s.index, s))
        if config.train.batch_size > n:  # a batch is drawn from one source
            raise ValueError(f"train.batch_size = {config.train.batch_size} is larger than the {n} items of "
                             f"{s.name}: set train.batch_size <= {n}" + (" or raise data.train_size"
                                                                        if len(s) == data.train_size else ""))
    log("data mixture: " + "; ".join(f"{s.name} {len(held.get(s.index, s))} items, weight {s.weight:g}, "
                                      f"{'in memory' if s.index in held else 'streamed'}" for s in sources))

    def texts_only() -> list[Sample]:  # every item's texts, without its image
        return [Sample(texts=texts) for s in sources for texts in
                ((x.texts for x in held[s.index]) if s.index in held else (s.texts(i) for i in range(len(s))))]

    tokenizer = stage0_text_tokenizer(config, folder, lambda: [t.text for x in texts_only() for t in x.texts], log)
    lens: dict[str, int] = {}
    if tokenizer is not None:  # before the VQ-VAE's training, so a bad length fails in seconds
        sizes = text_sizes(texts_only(), tokenizer)
        lens = text_lengths(sizes, config)
        check_text_lengths(sizes, lens, log)
    images = ImageItems([held.get(s.index, s) for s in sources if s.has_images])

    def train_vq(vq_dir: Path | None) -> VQVAE | None:
        if not len(images):
            return None
        # decoded after the training, not beside its batches: a source never holds more than data.memory_items
        shown = (images[k] for k in range(min(len(images), FIDELITY_SCENES, data.memory_items)))
        return train_image_tokenizer(images, shown, config, vq_dir, progress, log)

    vq = stage0_image_tokenizer(config, folder, train_vq, log)
    pixel_patch = layout.vq_factor if layout.continuous_images else None
    train = []
    for s in sources:
        own_lens = {role: lens[role] for role in s.roles}
        if s.index in held:
            with warnings.catch_warnings():  # check_text_lengths has said, per role, what is truncated
                warnings.simplefilter("ignore")
                tokens = tokenize_samples(held.pop(s.index), tokenizer, vq if s.has_images else None, own_lens,
                                          pixel_patch=pixel_patch if s.has_images else None)
        else:
            tokens = StreamedSource(s, tokenizer, vq, own_lens, pixel_patch, data.memory_items)
        train.append(MixtureSource(f"{s.index}:{s.kind}", s.weight, tokens))
    return PreparedData(tokenizer, vq, Mixture(train), lens, [])


def _decode_all(source: Source) -> list[Sample]:
    """Every item of ``source``, decoded. An image that passes the format's eager check and still fails to decode
    is skipped and counted in one warning, as a single-source run does."""
    samples, failed = [], []
    for i in range(len(source)):
        try:
            samples.append(source[i])
        except OSError as e:  # the source and the file are named
            failed.append(str(e))
    if failed:
        warnings.warn(f"{source.name}: skipped {len(failed)} of {len(source)} items whose image failed to decode, "
                      f"first: {failed[0]}", stacklevel=2)
    if not samples:
        raise ValueError(f"{source.name}: no item could be decoded")
    return samples
