"""The `mdm` command line: output, files written, and errors for bad input."""

import json
import os
import shutil

import pytest

from mdm.cli import main


def test_info_reports_paper_shape(capsys):
    assert main(["info", "--config", "paper-7b", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_layers"] == 49 and info["d_model"] == 2048
    assert info["image_tokens"] == 256 and info["text_tokens"] == 512  # 256 px, VQ /8, patch 2x2; App. C
    assert 1.4e9 < info["parameters"] < 1.6e9
    assert info["flops_per_sequence"] == pytest.approx(info["flops_per_token"] * info["sequence_length"])


def test_unknown_override_names_key_and_valid_keys(capsys):
    assert main(["info", "--config", "tiny", "backbone.d_modle=64"]) == 2
    err = capsys.readouterr().err
    assert "backbone.d_modle" in err and "d_model" in err


def test_unknown_preset(capsys):
    assert main(["info", "--config", "huge"]) == 2
    assert "tiny" in capsys.readouterr().err  # lists the presets


def test_bench_backbone_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "backbone", "--config", "tiny", "--lengths", "64,128", "--in-process",
                 "--out", str(out), "--plot"])
    assert code == 0
    result = json.loads((out / "backbone.json").read_text())
    assert set(result["backbone"]) == {"mamba", "transformer_same_depth", "transformer_param_matched"}
    for runs in result["backbone"].values():
        assert runs["64"]["seconds"] > 0 and runs["128"]["seconds"] > 0
    assert result["ssd"]["128"]["chunked"]["seconds"] > 0 and result["ssd"]["128"]["sequential"]["seconds"] > 0
    assert (out / "backbone.png").stat().st_size > 1000
    table = capsys.readouterr().out
    assert "| 128 |" in table and "matmul peak" in table


def test_data_preview_writes_png(tmp_path, capsys):
    for name in ("shapesworld", "digits", "moving-digits"):
        out = tmp_path / f"{name}.png"
        assert main(["data", "preview", name, "-n", "4", "--out", str(out)]) == 0
        assert out.stat().st_size > 5000
    assert "wrote" in capsys.readouterr().out


def test_data_preview_of_a_level(tmp_path, capsys):
    out = tmp_path / "easy.png"  # the overrides may follow the options
    assert main(["data", "preview", "shapesworld", "-n", "2", "--out", str(out), "data.level=easy"]) == 0
    assert out.stat().st_size > 3000 and "wrote" in capsys.readouterr().out
    assert main(["data", "preview", "shapesworld", "--out", str(out), "data.level=expert"]) == 2
    assert main(["data", "preview", "shapesworld", "--out", str(out), "train.steps=3"]) == 2
    assert "data.level must be one of easy, medium, hard" in capsys.readouterr().err


def test_tokenizer_train_cli(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    words = ["red", "green", "blue", "circle", "square", "triangle", "left", "right", "small", "large"]
    corpus.write_text("\n".join(f"a {words[i % 10]} {words[(i * 3) % 10]} on the {words[(i * 7) % 10]}"
                                for i in range(300)))
    assert main(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "40", "--out",
                 str(tmp_path / "tok")]) == 0
    assert "supports only" in capsys.readouterr().err  # a small corpus: fewer pieces than asked, said aloud
    assert (tmp_path / "tok" / "tokenizer.model").is_file()
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["tokenizer", "train", "--input", str(empty), "--vocab-size", "40", "--out",
                 str(tmp_path / "t2")]) == 2
    assert "empty.txt" in capsys.readouterr().err


def test_vq_train_cli_reports_l2_against_baseline(tmp_path, capsys):
    assert main(["vq", "train", "--data", "shapesworld", "--size", "64", "--image-size", "16", "--steps", "3",
                 "--batch-size", "8", "--codebook-size", "16", "--out", str(tmp_path / "vq")]) == 0
    out = capsys.readouterr().out
    assert "validation L2 (Eq. 15)" in out and "mean-image baseline" in out
    assert (tmp_path / "vq" / "model.safetensors").is_file()
    assert main(["vq", "train", "--data", "shapesworld", "--size", "64", "--image-size", "16", "--steps", "3",
                 "--batch-size", "8", "--codebook-size", "16", "--local", "--out", str(tmp_path / "local")]) == 0
    from mdm.nn.vq import VQVAE
    assert VQVAE.load(tmp_path / "local").config.local and not VQVAE.load(tmp_path / "vq").config.local


# ---------------------------------------------------------------------------- train / sample / quickstart

TINY_RUN = ["train.steps=2", "train.batch_size=4", "train.log_every=1", "data.train_size=48", "data.vq_steps=2",
            "data.codebook_size=32", "data.vocab_size=64"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--config", "tiny", "--out", str(out), "--no-progress", *TINY_RUN]) == 0
    return out


def test_train_writes_a_run_folder(run_dir, capsys):
    assert (run_dir / "checkpoint" / "model.safetensors").is_file() and (run_dir / "config.yaml").is_file()
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 2
    # resuming with more steps continues the same run
    assert main(["train", "--out", str(run_dir), "--resume", "--no-progress", "train.steps=3"]) == 0
    assert "step 3" in capsys.readouterr().out
    assert json.loads((run_dir / "checkpoint" / "config.json").read_text())["step"] == 3


def test_sample_caption_answer_generate(run_dir, tmp_path, capsys):
    fast = ["--checkpoint", str(run_dir), "--steps", "2"]
    assert main(["sample", *fast, "--prompt", "a red circle", "-n", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["generate", *fast, "-n", "2", "--out", str(tmp_path / "g.png")]) == 0
    for name in ("s", "g"):
        assert (tmp_path / f"{name}.png").stat().st_size > 2000
    from PIL import Image

    Image.new("RGB", (40, 40), (255, 0, 0)).save(tmp_path / "red.png")
    capsys.readouterr()
    assert main(["caption", *fast, str(tmp_path / "red.png")]) == 0
    assert capsys.readouterr().out.startswith(str(tmp_path / "red.png") + "\t")
    assert main(["answer", *fast, "--image", str(tmp_path / "red.png"), "--question", "what color is it?"]) == 0
    assert main(["answer", *fast, "--scene", "a red circle", "--question", "what color is the circle?"]) == 0


def test_sampling_commands_reject_bad_input(run_dir, tmp_path, capsys):
    fast = ["--checkpoint", str(run_dir), "--steps", "2"]
    assert main(["sample", *fast]) == 2
    assert "exactly one of --prompt" in capsys.readouterr().err
    assert main(["sample", *fast, "--prompt", "x", "--steps", "0"]) == 2
    assert "steps must be in [1, 1000]" in capsys.readouterr().err
    assert main(["sample", *fast, "--prompt", "x", "--guidance", "-1"]) == 2
    assert "guidance_scale" in capsys.readouterr().err
    assert main(["answer", *fast, "--question", "where?"]) == 2
    assert "exactly one of --image" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["generate", "--checkpoint", str(tmp_path / "empty")]) == 2
    assert "not an MDM checkpoint" in capsys.readouterr().err


def test_train_errors_name_the_problem(run_dir, tmp_path, capsys):
    assert main(["train", "--config", "tiny", "--out", str(run_dir), *TINY_RUN]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--config", "tiny", "--out", str(tmp_path / "r"), "train.stpes=3"]) == 2
    err = capsys.readouterr().err
    assert "train.stpes" in err and "steps" in err
    assert main(["train", "--config", "tiny", "--out", str(tmp_path / "r"), "data.name=coco"]) == 2
    assert "set data.path" in capsys.readouterr().err
    assert main(["train", "--config", "tiny", "--out", str(tmp_path / "r"), "data.name=imagefolder",
                 f"data.path={tmp_path / 'missing'}"]) == 2
    assert "image folder root not found:" in capsys.readouterr().err


def test_quickstart_end_to_end_on_a_tiny_model(tmp_path, capsys):
    shrink = ["backbone.d_model=32", "backbone.n_layers=2", "backbone.head_dim=16", "backbone.d_state=16"]
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--n-eval", "2", "--no-progress",
                 *TINY_RUN, *shrink]) == 0
    out = capsys.readouterr().out
    scores = json.loads((tmp_path / "qs" / "scores.json").read_text())
    assert {"t2i_attributes", "caption_all_true", "vqa", "text_to_text", "joint_agreement"} <= set(scores)
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert (tmp_path / "qs" / "quickstart.png").stat().st_size > 5000
    assert "next:" in out and "Q: " in out
    # a second call reuses the trained model
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--n-eval", "2", "--no-progress",
                 *TINY_RUN, *shrink]) == 0
    assert "reusing it" in capsys.readouterr().out


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mdm: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_a_users_bad_files_are_one_line_and_exit_code_2(run_dir, tmp_path, capsys, undecodable_png):
    fast = ["--checkpoint", str(run_dir), "--steps", "2"]
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main(["caption", *fast, str(text)]) == 2
    _one_line_error(capsys, str(text))
    assert main(["caption", *fast, str(tmp_path / "missing.png")]) == 2
    _one_line_error(capsys, "missing.png")
    assert main(["caption", *fast, str(tmp_path)]) == 2  # a folder whose only image cannot be read
    _one_line_error(capsys, str(tmp_path))
    undecodable_png(tmp_path / "broken.png")
    assert main(["answer", *fast, "--image", str(tmp_path / "broken.png"), "--question", "what?"]) == 2
    _one_line_error(capsys, "broken.png")
    bad = tmp_path / "coco.json"
    for body, field in (('{"images": 5, "annotations": []}', "'images' is a int"),
                        ('{"images": [{"id": [1], "file_name": "a.png"}], "annotations": []}', "'id' is a list")):
        bad.write_text(body)
        assert main(["train", "--config", "tiny", "--out", str(tmp_path / "coco-run"), "--no-progress",
                     "data.name=coco", f"data.path={bad}", f"data.images={tmp_path}", *TINY_RUN]) == 2
        _one_line_error(capsys, str(bad), field)
    with pytest.raises(OSError):  # --debug: the traceback, for a bug report
        main(["--debug", "caption", *fast, str(text)])
    with pytest.raises(OSError):
        main(["caption", "--debug", *fast, str(text)])


def test_counts_tasks_and_weights_are_checked_before_sampling(run_dir, tmp_path, capsys):
    fast = ["--checkpoint", str(run_dir), "--steps", "2"]
    for n in ("0", "-3"):
        with pytest.raises(SystemExit) as stop:  # argparse: exit code 2, the option named
            main(["sample", *fast, "--prompt", "x", "-n", n])
        assert stop.value.code == 2 and "argument -n: must be >= 1" in capsys.readouterr().err
    assert main(["sample", *fast, "--label", "3", "-n", "2", "--out", str(tmp_path / "c.png")]) == 2
    _one_line_error(capsys, "never trained class_to_image")
    assert not (tmp_path / "c.png").exists()
    assert main(["sample", *fast, "--prompt", "x", "-n", "1", "--out", str(tmp_path)]) == 0  # a folder: the file in it
    assert f"wrote {tmp_path / 'samples.png'}" in capsys.readouterr().out and (tmp_path / "samples.png").is_file()
    assert main(["sample", *fast, "--prompt", "x", "-n", "1", "--out", str(tmp_path / "bare")]) == 2
    _one_line_error(capsys, "must end in .png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere: nothing to check then
            assert main(["generate", *fast, "-n", "1", "--out", str(locked / "g.png")]) == 2
            _one_line_error(capsys, "not writable")
    finally:
        locked.chmod(0o700)
    (tmp_path / "file.txt").write_text("")
    assert main(["generate", *fast, "-n", "1", "--out", str(tmp_path / "file.txt" / "g.png")]) == 2
    _one_line_error(capsys, "cannot create the folder")
    nan_copy = tmp_path / "nan"
    shutil.copytree(run_dir / "checkpoint", nan_copy)
    from safetensors.torch import load_file, save_file

    for name in ("model.safetensors", "ema.safetensors"):
        state = load_file(str(nan_copy / name))
        save_file({k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()},
                  str(nan_copy / name))
    assert main(["sample", "--checkpoint", str(nan_copy), "--steps", "2", "--prompt", "x", "-n", "1",
                 "--out", str(tmp_path / "n.png")]) == 2
    _one_line_error(capsys, "model.safetensors", "NaN or inf")
