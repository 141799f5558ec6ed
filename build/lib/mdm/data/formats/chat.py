"""Chat JSON lines (UltraChat's format, or role/content messages), and how a dialogue trains text->text."""

from __future__ import annotations

import json

from torch.utils.data import Dataset

from mdm.data.formats.common import PathLike, existing, field, text_field
from mdm.data.sample import Role, Sample, TextSegment


_CHAT_ROLES = {"user": Role.USER, "assistant": Role.ASSISTANT, "system": Role.TEXT}


class ChatJsonlDataset(Dataset[Sample]):
    """UltraChat-style JSON lines, one dialogue a line, as USER/ASSISTANT segments.

    A line is ``{"messages": [{"role": "user"|"assistant"|"system", "content": str}]}``
    (a system prompt becomes a TEXT segment) or UltraChat's raw
    ``{"data": [turn, turn, ...]}``, alternating user/assistant from a user turn.
    Every line is parsed once at construction, so errors surface before training
    (file, line number, field), but only byte offsets are kept: UltraChat is
    gigabytes, and ``__getitem__`` re-reads its line. Blank lines are ignored.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = existing(path, "chat JSONL file")
        self.offsets: list[tuple[int, int]] = []  # (byte offset, line number)
        offset = 0
        with self.path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if raw.strip():
                    self._parse(raw, lineno, len(self.offsets))
                    self.offsets.append((offset, lineno))
                offset += len(raw)

    def _parse(self, raw: bytes, lineno: int, index: int) -> list[TextSegment]:
        where = f"{self.path}: record {index} (line {lineno})"
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{where}: malformed JSON: {err}") from err
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
        if "messages" in record:
            if not isinstance(record["messages"], list):
                raise ValueError(f"{where}: field 'messages' must be a list")
            segments = []
            for i, msg in enumerate(record["messages"]):
                role = field(msg, "role", self.path, f"record {index} (line {lineno}) message {i}")
                content = text_field(msg, "content", self.path, f"record {index} (line {lineno}) message {i}")
                if role not in _CHAT_ROLES:
                    raise ValueError(f"{where}: message {i} has role {role!r}, expected one of {list(_CHAT_ROLES)}")
                segments.append(TextSegment(_CHAT_ROLES[role], content))
        elif "data" in record:
            turns = record["data"]
            if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
                raise ValueError(f"{where}: field 'data' must be a list of strings")
            segments = [TextSegment(Role.USER if i % 2 == 0 else Role.ASSISTANT, t) for i, t in enumerate(turns)]
        else:
            raise ValueError(f"{where}: record has no field 'messages' (or 'data')")
        if not segments:
            raise ValueError(f"{where}: empty dialogue")
        return segments

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> Sample:
        offset, lineno = self.offsets[index]
        with self.path.open("rb") as f:
            f.seek(offset)
            raw = f.readline()
        return Sample(texts=self._parse(raw, lineno, index), meta={"path": str(self.path), "line": lineno})


def _turn_line(segment: TextSegment) -> str:
    return segment.text if segment.role is Role.TEXT else f"{segment.role.value}: {segment.text}"


def text_to_text_sample(dialogue: Sample) -> Sample:
    """A dialogue as a text->text sample: its last assistant turn is the ANSWER, the user turn before it the
    QUESTION, and the turns before that (a system prompt, earlier exchanges; "user: ..." / "assistant: ...",
    one a line) the SCENE, an empty string when the dialogue opens with that question.

    Why this shape: text->text (DESIGN.md §4) generates an answer from a context and a question, and a chat reply
    is an answer to the last user turn given what was said before it. A dialogue without an assistant turn that
    answers a user turn has nothing to train, and is an error naming its line.
    """
    turns = list(dialogue.texts)
    while turns and turns[-1].role is not Role.ASSISTANT:  # a trailing user turn has no reply to learn
        turns.pop()
    where = f"{dialogue.meta.get('path', 'chat data')}: line {dialogue.meta.get('line', '?')}"
    if len(turns) < 2 or turns[-2].role is not Role.USER:
        raise ValueError(f"{where}: a dialogue needs an assistant turn that answers a user turn; its roles are "
                         f"{[t.role.value for t in dialogue.texts]}")
    scene = "\n".join(_turn_line(t) for t in turns[:-2])
    texts = [TextSegment(Role.SCENE, scene), TextSegment(Role.QUESTION, turns[-2].text),
             TextSegment(Role.ANSWER, turns[-1].text)]
    return Sample(texts=texts, meta=dict(dialogue.meta))
