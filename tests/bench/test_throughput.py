"""Fig. 5's throughput benchmark: the real sampler at each resolution, both backbones, a table and a plot."""

from dataclasses import replace

import pytest

from mdm.cli import main
from mdm.config import load_config
from mdm.bench.throughput import bench_throughput, format_throughput, plot_throughput


def test_throughput_measures_both_backbones_at_each_resolution(tmp_path):
    config = load_config("tiny")
    config = replace(config, layout=replace(config.layout, vq_factor=4))
    result = bench_throughput(config, resolutions=(8, 16), batch=1, steps=1, threads=1, lengths=(64, 128))
    assert set(result["runs"]) == {"mamba", "transformer"}
    for run in result["runs"].values():
        assert [r["tokens"] for r in run["rows"]] == [4, 16]
        assert all(r["images_per_s"] > 0 and r["seconds"] > 0 for r in run["rows"])
        assert [r["length"] for r in run["latency"]] == [64, 128] and all(r["seconds"] > 0 for r in run["latency"])
    assert result["runs"]["transformer"]["n_layers"] < result["runs"]["mamba"]["n_layers"]  # parameter-matched
    table = format_throughput(result)
    assert "| 16 | 16 |" in table and "| 128 |" in table
    plot_throughput(result, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000


@pytest.mark.parametrize("args,message", [
    (["--resolutions", "32,abc"], "comma-separated integers"),
    (["--lengths", "4"], "--lengths must be >= 8 tokens"),
    (["--resolutions", "30"], r"\[30\] must be positive multiples of layout.vq_factor 4"),
    (["--batch", "0"], "--batch and --steps must be >= 1"),
])
def test_throughput_bad_arguments(args, message, capsys, tmp_path):
    import re

    assert main(["bench", "throughput", "--out", str(tmp_path), *args]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_failed_point_keeps_what_was_measured(monkeypatch, capsys):
    import mdm.bench.timing

    real = mdm.bench.timing.in_subprocess

    def out_of_memory_at_16(target, *args, **kwargs):
        if args[1] == 16:  # the resolution (sampling) or the length (latency)
            return {"error": "BrokenProcessPool: killed"}
        return real(target, *args, **kwargs)

    monkeypatch.setattr(mdm.bench.timing, "in_subprocess", out_of_memory_at_16)
    config = replace(load_config("tiny"), layout=replace(load_config("tiny").layout, vq_factor=4))
    result = bench_throughput(config, resolutions=(8, 16), batch=1, steps=1, threads=1, lengths=(8, 16))
    for run in result["runs"].values():
        assert [r["resolution"] for r in run["rows"]] == [8] and [r["length"] for r in run["latency"]] == [8]
    assert "failed: BrokenProcessPool: killed" in capsys.readouterr().out
    assert "| 8 | 4 |" in format_throughput(result)
