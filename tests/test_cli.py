"""The `mdm` command line: output, files written, and errors for bad input."""

import json

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


def test_tokenizer_train_cli(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    words = ["red", "green", "blue", "circle", "square", "triangle", "left", "right", "small", "large"]
    corpus.write_text("\n".join(f"a {words[i % 10]} {words[(i * 3) % 10]} on the {words[(i * 7) % 10]}"
                                for i in range(300)))
    with pytest.warns(UserWarning, match="supports only"):  # a small corpus: fewer pieces than asked, said aloud
        assert main(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "40", "--out",
                     str(tmp_path / "tok")]) == 0
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
