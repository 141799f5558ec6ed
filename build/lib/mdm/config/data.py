"""The data section: which dataset a run reads, its stage-0 sizes and the text length of each role."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mdm.config.choices import (SHAPESWORLD_LEVEL_KINDS, SHAPESWORLD_QUESTION_KINDS, SOURCE_FILES, SOURCE_KINDS,
                                TOKENIZER_TYPES)
from mdm.config.errors import ConfigError

VQ_BATCH = 32  # images a stage-0 VQ-VAE step trains on (mdm.training.prepare): the least a source may hold


@dataclass
class DataConfig:
    """Which data: a built-in dataset and the text length of each role.

    ``level``: a ShapesWorld difficulty level, a preset of the generator (DESIGN.md §6,
    :mod:`mdm.data.shapesworld_levels`); easy and medium are drawn at 32 px, ``hard`` is the generator as it
    was before levels, at any ``layout.image_size``.
    """

    name: str = "shapesworld"  # shapesworld | digits | moving-digits (built in) | imagefolder | coco | captionfolder
    # | vqav2 | chat (files)
    # | mixture (data.sources)
    path: str = ""  # imagefolder: the class folder; coco: captions JSON; captionfolder: the folder of images and
    # metadata.jsonl; vqav2: questions JSON; chat: the JSONL
    images: str = ""  # coco / vqav2: the images folder
    annotations: str = ""  # vqav2: the annotations JSON (answers)
    train_size: int = 8000  # samples generated (shapesworld) or read at most (files; 0 = all)
    seed: int = 0
    vocab_size: int = 128  # SentencePiece pieces asked for (a small corpus supports fewer)
    # the SentencePiece model of the texts: unigram (App. D's) splits a small world's words (15 of 25 words of
    # 4000 small-world captions) and warns naming the remedy; word keeps them whole but maps words it never saw to
    # unk; auto takes word when every distinct word fits in data.vocab_size, else unigram. unigram stays the
    # default: the quickstart scored lower with word (captions 18.8% vs 32.8%, text->text 62.5% vs 75.0%, one
    # seed; experiments/tokenizer-small-corpora)
    tokenizer: str = "unigram"  # auto | unigram | bpe | word
    codebook_size: int = 256  # VQ codes (the image vocabulary)
    vq_steps: int = 1200
    vq_local: bool = False  # VQ codes see only their own patch (mdm.nn.vq.VQVAE says why)
    motion_step: int = 1  # moving-digits: positions and velocities in multiples of this many px (vq_factor: whole codes)
    digit_size: int = 0  # moving-digits: the digit's side in px; 0 = half the canvas (layout.image_size)
    question_kinds: list = field(default_factory=list)  # shapesworld: the question kinds drawn; [] = the level's
    level: str = "hard"  # shapesworld: easy | medium | hard, a preset of the generator (the docstring says more)
    # tokens per text segment by role, eos included (the longest ShapesWorld texts fit); a role left out takes
    # its longest training text. Answers are left out: how many pieces "zero" takes depends on the tokenizer,
    # and a cut answer trains a wrong target (training.prepare.check_text_lengths refuses one)
    text_lens: dict = field(default_factory=lambda: {"caption": 28, "question": 20, "scene": 32})
    # data.name mixture: the sources read together, each {kind, weight (default 1), its files}, e.g.
    # [{kind: coco, path: caps.json, images: imgs/, weight: 2}, {kind: chat, path: chat.jsonl}] (mdm.data.mixture)
    sources: list = field(default_factory=list)
    # a mixture's source of more items is streamed: read from disk as it is drawn, never more decoded at once
    memory_items: int = 4096

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of data a run reads: its sources' kinds in a mixture, else ``name``."""
        return tuple(s["kind"] for s in self.sources) if self.name == "mixture" else (self.name,)

    def __post_init__(self) -> None:
        for name in ("train_size", "seed", "digit_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("vocab_size", "codebook_size", "vq_steps", "motion_step"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        self.sources = check_sources(self.sources, self.name)
        if self.name == "mixture":
            given = [key for key in ("path", "images", "annotations") if getattr(self, key)]
            if given:
                raise ConfigError(f"data.{given[0]} names the files of one source; data.name mixture reads each "
                                  f"source's own (data.sources[i].{given[0]})")
        if self.question_kinds or self.level != "hard":
            if self.level not in SHAPESWORLD_LEVEL_KINDS:
                raise ConfigError(f"data.level must be one of {', '.join(SHAPESWORLD_LEVEL_KINDS)}, "
                                  f"got {self.level!r}")
            if self.level != "hard" and "shapesworld" not in self.kinds:
                raise ConfigError(f"data.level {self.level} applies to data.name shapesworld, not {self.name!r}")
        if self.question_kinds:
            if not isinstance(self.question_kinds, list):
                raise ConfigError(f"data.question_kinds must be a list such as [color, count], "
                                  f"got {self.question_kinds!r}")
            if "shapesworld" not in self.kinds:
                raise ConfigError(f"data.question_kinds applies to data.name shapesworld, not {self.name!r}")
            kinds = self.question_kinds  # the dataset's own rule (ShapesWorldConfig), said in the config's key
            if not all(k in SHAPESWORLD_QUESTION_KINDS for k in kinds) or len(set(kinds)) != len(kinds):
                raise ConfigError(f"data.question_kinds must be distinct kinds of "
                                  f"{', '.join(SHAPESWORLD_QUESTION_KINDS)}, got {self.question_kinds}")
            own = SHAPESWORLD_LEVEL_KINDS[self.level]
            if [k for k in self.question_kinds if k not in own]:
                raise ConfigError(f"data.question_kinds {self.question_kinds} asks for kinds that data.level "
                                  f"{self.level} does not have; its kinds: {', '.join(own)}")
        if self.tokenizer not in TOKENIZER_TYPES:
            raise ConfigError(f"data.tokenizer must be one of {', '.join(TOKENIZER_TYPES)}, got {self.tokenizer!r}")
        for role, n in self.text_lens.items():
            if not isinstance(n, int) or n < 1:
                raise ConfigError(f"data.text_lens.{role} must be an int >= 1, got {n!r}")
        if self.memory_items < VQ_BATCH:
            raise ConfigError(f"data.memory_items must be >= {VQ_BATCH} (a stage-0 VQ-VAE batch of images), "
                              f"got {self.memory_items}")


def check_sources(sources: Any, name: str) -> list[dict[str, Any]]:
    """``data.sources`` checked and completed (a weight of 1 where none is given), each error naming the source by
    its index and field. The files are checked where a run opens them (:mod:`mdm.data.mixture`)."""
    if not isinstance(sources, list):
        raise ConfigError(f"data.sources must be a list of sources such as [{{kind: chat, path: chat.jsonl}}], "
                          f"got {sources!r}")
    if name != "mixture":
        if sources:
            raise ConfigError(f"data.sources is read by data.name mixture, but data.name is {name!r}: "
                              f"set data.name=mixture")
        return []
    if not sources:
        raise ConfigError("data.name mixture reads data.sources: give at least one source, e.g. "
                          "[{kind: chat, path: chat.jsonl}]")
    checked = []
    for i, source in enumerate(sources):
        where = f"data.sources[{i}]"
        if not isinstance(source, dict):
            raise ConfigError(f"{where}: expected a mapping such as {{kind: chat, path: chat.jsonl}}; got {source!r}")
        kind = source.get("kind")
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"{where}.kind: expected one of {', '.join(SOURCE_KINDS)}; got {kind!r}")
        files = tuple(SOURCE_FILES[kind])
        unknown = sorted(set(source) - {"kind", "weight", *files})
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: not a key of {kind} sources, which take "
                              f"{', '.join(('kind', 'weight') + files)}")
        weight = source.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or weight < 0:
            raise ConfigError(f"{where}.weight: expected a finite number >= 0; got {weight!r}")
        for key in files:
            if not isinstance(source.get(key), str) or not source[key]:
                raise ConfigError(f"{where}.{key}: {kind} sources read their {SOURCE_FILES[kind][key]} from this "
                                  f"key; got {source.get(key)!r}")
        checked.append({"kind": kind, "weight": float(weight), **{key: source[key] for key in files}})
    if not any(s["weight"] > 0 for s in checked):
        raise ConfigError(f"data.sources: every weight is 0 ({[s['weight'] for s in checked]}); give a source a "
                          f"weight > 0")
    return checked

