"""``mdm train`` on a captioned image folder (``data.name=captionfolder``): it trains text->image, captioning and
joint from the folder, and each bad folder is one line naming the file and the line, exit code 2."""

import json
from contextlib import nullcontext

import pytest

from mdm.cli import main

FAST = ["backbone.n_layers=1", "train.batch_size=4", "train.steps=2", "train.log_every=1", "data.vq_steps=2",
        "data.codebook_size=32", "data.vocab_size=64"]


def train(folder, out, *extra: str) -> int:
    return main(["train", "--config", "tiny", "--no-progress", "--out", str(out), "data.name=captionfolder",
                 f"data.path={folder}", *FAST, *extra])


def test_mdm_train_on_a_captioned_folder_trains_its_three_tasks(tmp_path, write_caption_folder, capsys):
    captions = write_caption_folder(tmp_path / "mine", metadata="csv", copies=2)  # 8 images, 9 captions
    assert train(tmp_path / "mine", tmp_path / "run") == 0
    out = capsys.readouterr().out
    assert "trained SentencePiece unigram on 9 texts" in out and "step 2: loss" in out
    saved = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())
    assert sorted(saved["trained_tasks"]) == ["image_to_text", "joint", "text_to_image"]
    entries = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [1, 2] and all(e["loss"] == e["loss"] for e in entries)
    assert len(captions) == 8


@pytest.mark.parametrize("name,text,message", [
    (None, None, "no metadata.jsonl or metadata.csv in this captioned image folder"),
    ("metadata.jsonl", '{"file_name": "photos/red-0.png", "text": "red"}\n{"file_name": \n',
     "metadata.jsonl: line 2 is not JSON"),
    ("metadata.jsonl", '{"image": "photos/red-0.png", "text": "red"}\n',
     "metadata.jsonl: line 1 has no field 'file_name' (its fields: image, text)"),
    ("metadata.csv", "file_name,label\nphotos/red-0.png,3\n",
     "metadata.csv: the header (line 1) has no caption column 'text' or 'caption' (its columns: file_name, label)"),
    ("metadata.jsonl", '{"file_name": "photos/red-0.png", "text": ""}\n', "metadata.jsonl: line 1: empty caption"),
    ("metadata.jsonl", '{"file_name": "photos/gone.png", "text": "red"}\n',
     "data 'captionfolder' has no training samples"),
])
def test_mdm_train_names_a_bad_folder_in_one_line_and_exits_2(tmp_path, write_caption_folder, capsys, name, text,
                                                              message):
    write_caption_folder(tmp_path / "mine")
    (tmp_path / "mine" / "metadata.jsonl").unlink()
    if name is not None:
        (tmp_path / "mine" / name).write_text(text)
    with pytest.warns(UserWarning, match="gone.png") if "gone" in (text or "") else nullcontext():
        assert train(tmp_path / "mine", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mdm: error: ") and message in err[0], err
    assert "Traceback" not in err[0]

