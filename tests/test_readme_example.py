"""The README's worked example (your own captioned images and a VQA file) cannot rot: its YAML, read out of the
README, loads and passes a mixture's checks on files laid out as its tree shows, and every ``mdm`` command it
lists parses with the options it uses."""

import json
import re
import shlex
from pathlib import Path

import pytest
from PIL import Image

import mdm
from mdm.cli.parser import build_parser
from mdm.config import load_config
from mdm.data.mixture import open_source
from mdm.training.mixture import check_mixture

README = Path(mdm.__file__).parents[2] / "README.md"
SECTION = "### Example: your own captioned images and a VQA file"


def example() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    return text[start:text.index("\n## ", start)]


def block(language: str, first_line: str = "") -> str:
    found = [b for b in re.findall(rf"```{language}\n(.*?)```", example(), re.S) if b.startswith(first_line)]
    assert len(found) == 1, f"README example: expected one ```{language} block starting {first_line!r}"
    return found[0]


def write_example_files(root: Path) -> None:
    """``my_images/`` and ``my_vqa/`` as the example's tree shows them, with one image."""
    (root / "my_images" / "photos").mkdir(parents=True)
    Image.new("RGB", (32, 32), (220, 30, 30)).save(root / "my_images" / "photos" / "1.jpg")
    (root / "my_images" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "photos/1.jpg", "text": "a red kite over the beach"}) + "\n")
    (root / "my_vqa").mkdir()
    (root / "my_vqa" / "questions.json").write_text(json.dumps(
        {"questions": [{"question_id": 1, "image_id": 1, "question": "what colour is the kite?"}]}))
    (root / "my_vqa" / "annotations.json").write_text(json.dumps(
        {"annotations": [{"question_id": 1, "image_id": 1, "multiple_choice_answer": "red",
                          "answers": [{"answer": "red"}]}]}))


def test_the_example_yaml_loads_and_its_sources_open(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(block("yaml", "# mine.yaml"))
    write_example_files(tmp_path)
    config = load_config("mine.yaml")
    assert config.data.name == "mixture" and config.data.kinds == ("captionfolder", "vqav2")
    check_mixture(config)  # the files its sources name exist, each source trains a task of train.task_weights
    opened = [open_source(i, config.data, config.layout.image_size, config.layout.image_channels) for i in range(2)]
    assert [s.texts(0)[0].text for s in opened] == ["a red kite over the beach", "what colour is the kite?"]
    (tmp_path / "my_vqa" / "annotations.json").unlink()  # the check can fail
    with pytest.raises(FileNotFoundError, match=r"data\.sources\[1\]\.annotations"):
        check_mixture(config)


def commands() -> list[list[str]]:
    """The ``mdm`` commands of the example's bash block, each without ``mdm`` (a ``pip ... &&`` before it dropped)."""
    lines = [line.split("#")[0].split("&&")[-1].strip() for line in block("bash").splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("mdm ")]


def test_every_command_of_the_example_parses_with_its_options():
    parser = build_parser()
    listed = commands()
    assert [argv[0] for argv in listed] == ["train", "caption", "answer", "sample", "demo"]
    for argv in listed:
        args, extra = parser.parse_known_args(argv)
        assert extra == [], (argv, extra)
        assert getattr(args, "checkpoint", "runs/mine") == "runs/mine"
    train = parser.parse_args(listed[0])
    assert train.config == "mine.yaml" and train.out == "runs/mine" and train.minutes == 30
    with pytest.raises(SystemExit):  # the check can fail: an option that does not exist
        parser.parse_args(listed[1] + ["--outdir", "x"])
