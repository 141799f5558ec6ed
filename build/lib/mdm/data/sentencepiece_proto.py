"""What SentencePiece's Python processor does not expose about a model, read from the model's bytes.

A SentencePiece model file is a serialised ``ModelProto`` (``sentencepiece_model.proto``); SentencePiece
ships Python classes for it, but they need the ``protobuf`` package, which MDM does not install. Reading
one enum needs only protobuf's wire format: fields as (number, wire type) keys, varints and
length-delimited bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

TYPE_NAMES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}  # TrainerSpec.ModelType


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """The varint at ``data[i:]`` and the index after it."""
    value, shift = 0, 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """``(field number, value)`` of one serialised message: varints as ints, everything else as bytes."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            n, i = _varint(data, i)
            value, i = data[i:i + n], i + n
        elif wire in (1, 5):  # fixed 64 / 32 bits
            n = 8 if wire == 1 else 4
            value, i = data[i:i + n], i + n
        else:
            raise ValueError(f"unknown protobuf wire type {wire}")
        if i > len(data):
            raise ValueError("truncated protobuf message")
        yield number, value


def model_type_of(proto: bytes) -> str:
    """The type a SentencePiece model was trained as: unigram, bpe, word or char.

    ``ModelProto.trainer_spec`` is field 2 and ``TrainerSpec.model_type`` its field 3; a model that omits it
    is unigram (the proto2 default). Raises ``ValueError`` on bytes that are not a protobuf message.
    """
    try:
        spec = next((v for n, v in _fields(proto) if n == 2 and isinstance(v, bytes)), b"")
        code = next((v for n, v in _fields(spec) if n == 3 and isinstance(v, int)), 1)
    except IndexError:
        raise ValueError("truncated protobuf message") from None
    return TYPE_NAMES.get(code, "unigram")
