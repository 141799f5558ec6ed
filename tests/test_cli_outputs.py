"""Outputs as files: ``--out-dir`` PNGs that decode to the pipeline's pixels, with samples.jsonl; batch captioning
and answering of folders, list files and question files into JSONL, missing images reported or refused."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mdm.cli import main
from mdm.cli.outputs import write_sample_files
from mdm.diffusion.sampling import SamplerConfig
from mdm.pipeline import MDMPipeline


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mdm: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _decoded(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path)).copy())


def _expected_uint8(images: torch.Tensor) -> torch.Tensor:
    """The documented conversion, written out: round(255 x), channels last."""
    return torch.round(images.clamp(0, 1) * 255).to(torch.uint8).movedim(-3, -1)


def test_sample_out_dir_writes_n_pngs_that_decode_to_the_pipelines_pixels(tiny_checkpoint, tmp_path, capsys):
    files = tmp_path / "files"
    assert main(["sample", "--checkpoint", str(tiny_checkpoint), "--steps", "2", "--prompt", "a red circle", "-n", "3",
                 "--seed", "5", "--out", str(tmp_path / "grid.png"), "--out-dir", str(files)]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 1000  # the grid is still written where --out says
    pipe = MDMPipeline.from_pretrained(tiny_checkpoint)
    images = pipe.text_to_image(["a red circle"] * 3, SamplerConfig(steps=2), seed=5)
    expected = _expected_uint8(images)
    assert sorted(p.name for p in files.iterdir()) == ["000.png", "001.png", "002.png", "samples.jsonl"]
    for i in range(3):
        decoded = _decoded(files / f"{i:03d}.png")
        assert decoded.dtype == torch.uint8 and torch.equal(decoded, expected[i]), f"sample {i}"
    assert not torch.equal(expected[0], expected[1])  # three samples, not one written three times
    assert _jsonl(files / "samples.jsonl") == [{"file": f"{i:03d}.png", "index": i, "prompt": "a red circle",
                                                 "seed": 5} for i in range(3)]
    assert "samples.jsonl" in capsys.readouterr().out


def test_out_dir_without_out_holds_the_grid_and_the_working_directory_stays_empty(tiny_checkpoint, tmp_path,
                                                                                 monkeypatch):
    work, files = tmp_path / "cwd", tmp_path / "files"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["sample", "--checkpoint", str(tiny_checkpoint), "--steps", "2", "--prompt", "a red circle", "-n", "2",
                 "--out-dir", str(files)]) == 0
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "--steps", "2", "-n", "2",
                 "--out-dir", str(files / "joint")]) == 0
    assert list(work.iterdir()) == []
    assert (files / "samples.png").stat().st_size > 1000 and (files / "joint" / "generated.png").stat().st_size > 1000


def test_generate_out_dir_records_each_generated_caption(tiny_checkpoint, tmp_path, capsys):
    files = tmp_path / "joint"
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "--steps", "2", "-n", "2", "--seed", "3",
                 "--out", str(tmp_path / "g.png"), "--out-dir", str(files)]) == 0
    printed = capsys.readouterr().out.splitlines()[:2]
    images, captions = MDMPipeline.from_pretrained(tiny_checkpoint).joint(2, SamplerConfig(steps=2), seed=3)
    assert _jsonl(files / "samples.jsonl") == [{"file": f"00{i}.png", "index": i, "caption": captions[i], "seed": 3}
                                               for i in range(2)]
    assert printed == captions
    for i in range(2):
        assert torch.equal(_decoded(files / f"00{i}.png"), _expected_uint8(images)[i])


def test_the_writer_rounds_grayscale_and_writes_a_clip_as_a_folder_of_frames(tmp_path):
    values = torch.tensor([0.0, 0.49 / 255, 0.51 / 255, 127.5 / 255, 254.49 / 255, 1.0, 1.7, -0.2])
    gray = values.reshape(1, 1, 2, 4)  # (b, c, h, w), one channel: an L PNG
    write_sample_files(tmp_path / ".", gray, [{"label": 1}])
    assert _decoded(tmp_path / "000.png").tolist() == [[0, 0, 1, 128], [254, 255, 255, 0]]
    clips = torch.rand(2, 3, 3, 4, 4, generator=torch.Generator().manual_seed(0))  # (b, T, c, s, s)
    out = tmp_path / "clips"
    out.mkdir()
    write_sample_files(out, clips, [{"label": 3, "seed": 0}] * 2)
    for i in range(2):
        for t in range(3):
            assert torch.equal(_decoded(out / f"00{i}" / f"frame-0{t}.png"), _expected_uint8(clips)[i, t])
    assert [r["file"] for r in _jsonl(out / "samples.jsonl")] == ["000/", "001/"]
    with pytest.raises(ValueError, match=r"3 records for images of shape \(2, 3, 3, 4, 4\)"):
        write_sample_files(out, clips, [{}] * 3)


def test_a_bad_out_dir_is_refused_before_sampling(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    assert main(["sample", "--checkpoint", str(tiny_checkpoint), "--prompt", "x", "-n", "1",
                 "--out", str(tmp_path / "s.png"), "--out-dir", str(tmp_path / "taken")]) == 2
    _one_line_error(capsys, "--out-dir", "taken", "is a file")
    assert not (tmp_path / "s.png").exists()


@pytest.fixture
def pictures(tmp_path):
    """Three images in a folder (one in a subfolder), and a list file naming two of them and two missing ones."""
    folder = tmp_path / "pictures"
    (folder / "more").mkdir(parents=True)
    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 255)), ("more/c.png", (0, 255, 0))):
        Image.new("RGB", (20, 20), colour).save(folder / name)
    (folder / "notes.txt").write_text("not an image, not listed")
    listing = tmp_path / "list.txt"
    listing.write_text("# captions wanted\npictures/a.png\n\npictures/gone-1.png\n"
                       f"{folder / 'more' / 'c.png'}\npictures/gone-2.png\n")
    return folder, listing


def test_caption_a_folder_in_batches_writes_jsonl_with_each_batchs_seed(tiny_checkpoint, pictures, tmp_path, capsys):
    folder, _ = pictures
    out = tmp_path / "captions.jsonl"
    assert main(["caption", "--checkpoint", str(tiny_checkpoint), "--steps", "2", str(folder), "--batch-size", "2",
                 "--seed", "7", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    records = _jsonl(out)
    assert [r["image"] for r in records] == [str(folder / "a.png"), str(folder / "b.png"), str(folder / "more/c.png")]
    assert [r["seed"] for r in records] == [7, 7, 8]  # batch k: seed + k
    assert printed == [f"{r['image']}\t{r['caption']}" for r in records]
    pipe = MDMPipeline.from_pretrained(tiny_checkpoint)
    from mdm.data.formats import load_image

    last = torch.stack([load_image(folder / "more/c.png", pipe.config.layout.image_size)])
    assert pipe.image_to_text(last, SamplerConfig(steps=2), seed=8) == [records[2]["caption"]]


def test_a_list_naming_missing_images_is_reported_and_the_rest_captioned_or_refused_with_strict(
        tiny_checkpoint, pictures, tmp_path, capsys):
    _, listing = pictures
    fast = ["caption", "--checkpoint", str(tiny_checkpoint), "--steps", "2"]
    assert main([*fast, str(listing), "--out", str(tmp_path / "c.jsonl")]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "do not exist" in line]
    assert len(warning) == 1 and warning[0].startswith(f"mdm: warning: {listing}: 2 of the 4 images it names")
    assert "gone-1.png" in warning[0] and "gone-2.png" in warning[0]
    assert [Path(r["image"]).name for r in _jsonl(tmp_path / "c.jsonl")] == ["a.png", "c.png"]
    assert len(captured.out.splitlines()) == 2
    assert main([*fast, str(listing), "--strict", "--out", str(tmp_path / "strict.jsonl")]) == 2
    _one_line_error(capsys, str(listing), "2 of the 4 images it names do not exist", "gone-1.png")
    assert not (tmp_path / "strict.jsonl").exists()
    nothing = tmp_path / "gone.txt"
    nothing.write_text("pictures/gone-1.png\n")
    assert main([*fast, str(nothing)]) == 2
    _one_line_error(capsys, str(nothing), "none of the images named exists", "gone-1.png")


def test_unreadable_images_in_a_folder_are_skipped_and_named_by_themselves_are_errors(
        tiny_checkpoint, pictures, capsys, undecodable_png):
    folder, _ = pictures
    undecodable_png(folder / "broken.png")
    fast = ["caption", "--checkpoint", str(tiny_checkpoint), "--steps", "2"]
    assert main([*fast, str(folder)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3 and "broken.png" in captured.err and "skipped" in captured.err
    assert main([*fast, str(folder), "--strict"]) == 2
    _one_line_error(capsys, "broken.png")
    assert main([*fast, str(folder / "broken.png")]) == 2
    _one_line_error(capsys, "broken.png")
    empty = folder / "empty"
    empty.mkdir()
    assert main([*fast, str(empty)]) == 2
    _one_line_error(capsys, str(empty), "no image files")


def test_answer_a_questions_file_in_order_with_images_and_scenes(tiny_checkpoint, pictures, tmp_path, capsys):
    folder, _ = pictures
    questions = tmp_path / "questions.jsonl"
    lines = [{"image": "pictures/a.png", "question": "what color is the shape?", "id": 1},
             {"scene": "a small red circle on the left", "question": "where is the circle?", "id": 2},
             {"image": "pictures/gone.png", "question": "what shape is it?", "id": 3},
             {"image": str(folder / "b.png"), "question": "how many shapes are there?", "id": 4}]
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "answers.jsonl"
    assert main(["answer", "--checkpoint", str(tiny_checkpoint), "--steps", "2", "--questions", str(questions),
                 "--batch-size", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "1 of the 3 images it names do not exist" in captured.err and "gone.png" in captured.err
    records = _jsonl(out)
    assert [r["id"] for r in records] == [1, 2, 4]  # the file's order, the missing image's question left out
    assert all(isinstance(r["answer"], str) and r["question"] == lines[r["id"] - 1]["question"] for r in records)
    assert [r["seed"] for r in records] == [0, 2, 1]  # VQA batches first (seeds 0, 1), then text->text (2)
    assert captured.out.splitlines()[1] == f"{lines[1]['scene']}\t{lines[1]['question']}\t{records[1]['answer']}"
    assert main(["answer", "--checkpoint", str(tiny_checkpoint), "--questions", str(questions), "--strict"]) == 2
    _one_line_error(capsys, str(questions), "gone.png")


@pytest.mark.parametrize("line,message", [
    ('{"image": "a.png"}', "line 2: field 'question' must be a non-empty string"),
    ('{"image": "a.png", "scene": "x", "question": "q"}', "line 2: give exactly one of the fields 'image'"),
    ('{"question": "q", "image": 3}', "line 2: field 'image' must be a non-empty string"),
    ('["image", "question"]', "line 2 is a JSON list, expected an object"),
    ('{"question": "q", "image": ', "line 2 is not JSON"),
])
def test_a_malformed_questions_line_is_one_error_naming_the_file_line_and_field(tiny_checkpoint, tmp_path, capsys,
                                                                               line, message):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"scene": "one shape", "question": "how many?"}\n' + line + "\n")
    assert main(["answer", "--checkpoint", str(tiny_checkpoint), "--questions", str(questions)]) == 2
    _one_line_error(capsys, str(questions), message)


def test_answer_refuses_mixed_and_incomplete_options(tiny_checkpoint, tmp_path, capsys):
    fast = ["answer", "--checkpoint", str(tiny_checkpoint)]
    assert main([*fast, "--questions", str(tmp_path / "q.jsonl"), "--question", "where?"]) == 2
    _one_line_error(capsys, "drop --question")
    assert main([*fast, "--image", "x.png"]) == 2
    _one_line_error(capsys, "--question TEXT")
    assert main([*fast, "--questions", str(tmp_path / "none.jsonl")]) == 2
    _one_line_error(capsys, "none.jsonl")
