"""Shared test setup: offline Hugging Face, a headless matplotlib, a fixed seed per test, and a broken PNG."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same RNG state, whatever ran before it."""
    torch.manual_seed(0)
    yield


def write_undecodable_png(path, colour=(0, 0, 255)) -> None:
    """A 16 px PNG whose chunk checksums are right but whose pixel data does not inflate: it passes
    PIL's verify() and fails only when decoded."""
    import struct
    import zlib

    from PIL import Image

    Image.new("RGB", (16, 16), colour).save(path)
    data = path.read_bytes()
    at = data.index(b"IDAT") - 4
    n = struct.unpack(">I", data[at:at + 4])[0]
    junk = bytes(range(7, 7 + n))
    path.write_bytes(data[:at] + struct.pack(">I", n) + b"IDAT" + junk + struct.pack(">I", zlib.crc32(b"IDAT" + junk))
                     + data[at + 12 + n:])


@pytest.fixture
def undecodable_png():
    """:func:`write_undecodable_png`, for tests of images that break only when decoded."""
    return write_undecodable_png


def write_mixture_files(root, captions_per_image: int = 2) -> dict:
    """Tiny COCO captions, VQAv2 and chat files over six 16 px JPEGs in ``root``; each source's texts hold a
    character no other source has (é, ß, λ), so a tokenizer that missed a source's texts cannot cover them.
    Returns the paths by name."""
    import json

    from PIL import Image

    images = root / "images"
    images.mkdir(parents=True)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
               "white": (250, 250, 250), "black": (10, 10, 10)}
    for image_id, (name, rgb) in enumerate(colours.items(), start=1):
        Image.new("RGB", (16, 16), rgb).save(images / f"{image_id:012d}.jpg")  # COCO 2017's names
    names = list(colours)
    captions = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(1, 7)],
                "annotations": [{"image_id": i, "caption": caption}
                                for i, name in enumerate(names, start=1)
                                for caption in [f"a {name} café wall", f"the {name} square"][:captions_per_image]
                                + [f"{name} café tile {k}" for k in range(2, captions_per_image)]]}
    questions = {"questions": [{"question_id": 10 * i + k, "image_id": i, "question": question}
                               for i in range(1, 7) for k, question in enumerate(("what colour is the straße?",
                                                                                  "is it dark?"))]}
    answers = {"annotations": [{"question_id": 10 * i + k, "image_id": i, "multiple_choice_answer": answer,
                                "answers": [{"answer": answer}] * 3}
                               for i, name in enumerate(names, start=1)
                               for k, answer in enumerate((name, "yes" if name == "black" else "no"))]}
    chat = [{"messages": [{"role": "user", "content": f"what is λ{k}?"},
                          {"role": "assistant", "content": f"λ{k} is a letter"}]} for k in range(8)]
    paths = {"images": images, "captions": root / "captions.json", "questions": root / "questions.json",
             "answers": root / "answers.json", "chat": root / "chat.jsonl"}
    paths["captions"].write_text(json.dumps(captions))
    paths["questions"].write_text(json.dumps(questions))
    paths["answers"].write_text(json.dumps(answers))
    paths["chat"].write_text("".join(json.dumps(line) + "\n" for line in chat))
    return paths


@pytest.fixture(name="write_mixture_files")
def write_mixture_files_fixture():
    """:func:`write_mixture_files` itself, for a test that writes the files with other options (a fixture, not an
    import: ``from conftest import`` finds whichever conftest module is loaded first)."""
    return write_mixture_files


@pytest.fixture
def mixture_files(tmp_path):
    """:func:`write_mixture_files` in a fresh folder: 12 captions, 12 questions, 8 dialogues."""
    return write_mixture_files(tmp_path / "mixture-data")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A run folder of the ``tiny`` config trained for two steps on ShapesWorld (every task), for tests that only
    read it: trained once a session."""
    from mdm.config import load_config
    from mdm.training.run import train_run

    config = load_config("tiny", ["train.steps=2", "train.batch_size=4", "train.log_every=1", "data.train_size=48",
                                  "data.vq_steps=2", "data.codebook_size=32", "data.vocab_size=96"])
    out = tmp_path_factory.mktemp("tiny-checkpoint") / "run"
    train_run(config, out, progress=False, log=lambda _: None)
    return out


CAPTIONED_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def write_caption_folder(root, metadata: str = "jsonl", column: str = "text", copies: int = 1) -> dict:
    """A captioned image folder (Hugging Face ImageFolder with captions) in ``root``: one 16 px PNG a colour of
    :data:`CAPTIONED_COLOURS` (times ``copies``, e.g. ``photos/red-1.png``) under ``photos/``, and a
    ``metadata.jsonl`` or ``metadata.csv`` with two captions for the first image (two lines) and one for each other.
    Returns ``{file_name: [captions]}`` in file order."""
    import csv
    import json

    from PIL import Image

    (root / "photos").mkdir(parents=True)
    captions: dict[str, list[str]] = {}
    for k in range(copies):
        for name, rgb in CAPTIONED_COLOURS.items():
            file_name = f"photos/{name}-{k}.png"
            Image.new("RGB", (16, 16), rgb).save(root / file_name)
            captions[file_name] = [f"a {name} tile, number {k}"]
    first = next(iter(captions))
    captions[first].append("the same tile again")
    rows = [(f, c) for f, cs in captions.items() for c in cs]
    rows.append(rows.pop(1))  # the first image's second caption last: its lines need not be adjacent
    if metadata == "jsonl":
        (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f, column: c}) + "\n" for f, c in rows))
    else:
        with (root / "metadata.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", column])
            writer.writerows(rows)
    return captions


@pytest.fixture(name="write_caption_folder")
def write_caption_folder_fixture():
    """:func:`write_caption_folder` itself (a fixture, not an import: there are two conftest modules)."""
    return write_caption_folder
