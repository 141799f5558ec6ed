"""Fig. 5's throughput benchmark: the real sampler at each resolution, both backbones, a table and a plot."""

from dataclasses import replace

import pytest
import torch

from mdm.cli import main
from mdm.config import load_config
from mdm.bench.throughput import bench_throughput, format_throughput, plot_throughput


def test_throughput_measures_both_backbones_at_each_resolution(tmp_path):
    config = load_config("tiny")
    config = replace(config, layout=replace(config.layout, vq_factor=4))
    result = bench_throughput(config, resolutions=(8, 16), batch=1, steps=1, threads=torch.get_num_threads(),
                              lengths=(64, 128), isolate=False)  # a fresh process per point: the test below
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

    def out_of_memory_at_16(target, *args, **kwargs):
        if args[1] == 16:  # the resolution (sampling) or the length (latency)
            return {"error": "BrokenProcessPool: killed"}
        return target(*args)  # measured here: the spawned process has its own test below

    monkeypatch.setattr(mdm.bench.timing, "in_subprocess", out_of_memory_at_16)
    config = replace(load_config("tiny"), layout=replace(load_config("tiny").layout, vq_factor=4))
    result = bench_throughput(config, resolutions=(8, 16), batch=1, steps=1, threads=torch.get_num_threads(),
                              lengths=(8, 16))
    for run in result["runs"].values():
        assert [r["resolution"] for r in run["rows"]] == [8] and [r["length"] for r in run["latency"]] == [8]
    assert "failed: BrokenProcessPool: killed" in capsys.readouterr().out
    assert "| 8 | 4 |" in format_throughput(result)


def test_a_point_measured_in_a_fresh_process_returns_its_figures_or_its_error():
    from mdm.bench.timing import backbone_job, in_subprocess
    from mdm.config import to_dict

    backbone = load_config("tiny").backbone
    row = in_subprocess(backbone_job, to_dict(backbone), 16, 1, 0)
    assert row["seconds"] > 0 and row["peak_mb"] >= 0 and row["repeats"] >= 3
    failed = in_subprocess(backbone_job, to_dict(backbone), backbone.max_seq_len + 8, 1, 0)  # raises in the child
    assert list(failed) == ["error"] and "ValueError" in failed["error"] and "max_seq_len" in failed["error"]
