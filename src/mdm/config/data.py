"""The data section: which dataset a run reads, its stage-0 sizes and the text length of each role."""

from __future__ import annotations

from dataclasses import dataclass, field

from mdm.config.choices import SHAPESWORLD_LEVEL_KINDS, SHAPESWORLD_QUESTION_KINDS, TOKENIZER_TYPES
from mdm.config.errors import ConfigError


@dataclass
class DataConfig:
    """Which data: a built-in dataset and the text length of each role.

    ``level``: a ShapesWorld difficulty level, a preset of the generator (DESIGN.md §6,
    :mod:`mdm.data.shapesworld_levels`); easy and medium are drawn at 32 px, ``hard`` is the generator as it
    was before levels, at any ``layout.image_size``.
    """

    name: str = "shapesworld"  # shapesworld | digits | moving-digits (built in) | imagefolder | coco | vqav2 | chat (files)
    path: str = ""  # imagefolder: the class folder; coco: captions JSON; vqav2: questions JSON; chat: the JSONL
    images: str = ""  # coco / vqav2: the images folder
    annotations: str = ""  # vqav2: the annotations JSON (answers)
    train_size: int = 8000  # samples generated (shapesworld) or read at most (files; 0 = all)
    seed: int = 0
    vocab_size: int = 128  # SentencePiece pieces asked for (a small corpus supports fewer)
    # the SentencePiece model of the texts: word keeps every word of a small world whole (unigram, App. D's,
    # split 15 of 25 words of 4000 small-world captions), but maps words it never saw to unk; auto takes word when
    # every distinct word of the corpus fits in data.vocab_size, else unigram, which spells rare words from pieces.
    # A config saved without the key was unigram
    tokenizer: str = "auto"  # auto | unigram | bpe | word
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

    def __post_init__(self) -> None:
        for name in ("train_size", "seed", "digit_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("vocab_size", "codebook_size", "vq_steps", "motion_step"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.question_kinds or self.level != "hard":
            if self.level not in SHAPESWORLD_LEVEL_KINDS:
                raise ConfigError(f"data.level must be one of {', '.join(SHAPESWORLD_LEVEL_KINDS)}, "
                                  f"got {self.level!r}")
            if self.level != "hard" and self.name != "shapesworld":
                raise ConfigError(f"data.level {self.level} applies to data.name shapesworld, not {self.name!r}")
        if self.question_kinds:
            if not isinstance(self.question_kinds, list):
                raise ConfigError(f"data.question_kinds must be a list such as [color, count], "
                                  f"got {self.question_kinds!r}")
            if self.name != "shapesworld":
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
