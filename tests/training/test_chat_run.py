"""``data.name=chat``: a chat JSONL trains text->text through ``mdm train``, and the run answers."""

import json
from pathlib import Path

from mdm.cli import main
from mdm.diffusion.sampling import SamplerConfig
from mdm.pipeline import MDMPipeline

FIXTURE = Path(__file__).parent.parent / "fixtures" / "chat.jsonl"


def test_mdm_train_on_a_chat_jsonl_trains_text_to_text_and_answers(tmp_path, capsys):
    out = tmp_path / "chat"
    assert main(["train", "--config", "tiny", "--out", str(out), "--no-progress", "data.name=chat",
                 f"data.path={FIXTURE}", "data.vocab_size=64", "train.steps=3", "train.batch_size=4",
                 "train.log_every=1"]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3] and all(entry["loss"] > 0 for entry in log)
    assert not (out / "vq").exists()  # text only: no image tokenizer
    pipe = MDMPipeline.from_pretrained(out)
    assert pipe.vq is None and set(pipe.text_lens) == {"scene", "question", "answer"}
    answers = pipe.text_to_text(["user: name a fruit"], ["name another fruit"], SamplerConfig(steps=2))
    assert len(answers) == 1 and isinstance(answers[0], str)
