"""Batching :class:`Sample` objects into tensors (DESIGN.md §1.1, §6).

:func:`collate_samples` turns a list of Samples into a dict of padded tensors;
laying them out as one MDM sequence (class/begin/time/end/pad tokens, Fig. 2 d,e)
is the model's job (:mod:`mdm.nn.layout`), so this file knows nothing about it.
Use it as a DataLoader ``collate_fn`` through ``functools.partial``::

    collate = partial(collate_samples, tokenizer=tok, text_len=32, roles=[Role.CAPTION])
    loader = DataLoader(dataset, batch_size=8, collate_fn=collate)

Batch keys (B = batch size, L = ``text_len``):

* ``"image"`` (B, 3, H, W) float, ``"image_tokens"`` (B, h, w) long, ``"video"``
  (B, T, 3, H, W) float — each present only when the samples have it;
* ``"label"`` (B,) long, :data:`NO_LABEL` (-1) where a sample has none (the
  model maps it to its null class, which classifier-free guidance also uses);
* for each requested role, ``batch[role.value]`` (B, L) long token ids from
  :meth:`TextTokenizer.encode_fixed` (text + eos, right-padded) and
  ``batch[role.value + "_len"]`` (B,) long real lengths, eos included; a sample
  without that role has an all-pad row and length 0 (an empty string has 1);
* ``"answers"`` list of B (list[str] or None); ``"meta"`` list of B dicts.

Only the first segment of a role is used: a dataset that has several (COCO's
five captions) decides how to expose them (``per_caption=True``), so a batch is
a deterministic function of its samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mdm.data.sample import Role, Sample
from mdm.data.text_tokenizer import PAD_ID, TextTokenizer

NO_LABEL = -1


def _stack(samples: Sequence[Sample], name: str) -> Tensor | None:
    """Stack ``sample.<name>`` over the batch; None if no sample has it; an error if only some do.

    Mixed batches are refused rather than filled with zeros: a zero image is a
    valid (black) image, and the model could not tell it from a missing one.
    """
    values = [getattr(s, name) for s in samples]
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        missing = present.index(False)
        raise ValueError(f"sample {missing} has no {name} but sample {present.index(True)} has one")
    shape = values[0].shape
    for i, v in enumerate(values):
        if v.shape != shape:
            raise ValueError(f"sample {i} has {name} of shape {tuple(v.shape)}, sample 0 has {tuple(shape)}")
    return torch.stack(values)


def collate_samples(
    samples: Sequence[Sample],
    tokenizer: TextTokenizer | None,
    text_len: int,
    roles: Sequence[Role | str] = (),
    *,
    strict: bool = False,
) -> dict[str, Any]:
    """A batch dict of ``samples`` (keys in the module docstring).

    ``strict`` is passed to the tokenizer: True raises on characters outside its
    coverage instead of mapping them to unk with a warning.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    roles = [Role(r) for r in roles]
    if roles and tokenizer is None:
        raise ValueError(f"roles {[r.value for r in roles]} need a tokenizer")
    batch: dict[str, Any] = {}
    for name in ("image", "image_tokens", "video"):
        stacked = _stack(samples, name)
        if stacked is not None:
            batch[name] = stacked
    batch["label"] = torch.tensor([NO_LABEL if s.label is None else s.label for s in samples], dtype=torch.long)
    for role in roles:
        ids = torch.full((len(samples), text_len), PAD_ID, dtype=torch.long)
        lengths = torch.zeros(len(samples), dtype=torch.long)
        for i, sample in enumerate(samples):
            text = sample.text(role)
            if text is not None:
                ids[i], lengths[i] = tokenizer.encode_fixed(text, text_len, strict=strict)  # type: ignore[union-attr]
        batch[role.value] = ids
        batch[f"{role.value}_len"] = lengths
    batch["answers"] = [s.answers for s in samples]
    batch["meta"] = [s.meta for s in samples]
    return batch
