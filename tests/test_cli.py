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
