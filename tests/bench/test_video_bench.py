"""DiM against full attention as clips grow: the shape parser, the table, and the schedule of measurements."""

import pytest

from mdm.bench.video import format_video, parse_shapes, summarize_video


def test_scaling_table_shapes_exponents_and_cells():
    assert parse_shapes("8x6x6, 16x16x16") == ((8, 6, 6), (16, 16, 16))
    for bad in ("8x6", "8x0x6", "axbxc"):
        with pytest.raises(ValueError, match="FRAMESxROWSxCOLS"):
            parse_shapes(bad)
    run = lambda n, k: {"tokens": n, "seconds": 1e-6 * n**k, "peak_mb": 1e-3 * n**k, "repeats": 3}  # noqa: E731
    result = {"params": {"dim": 1e6, "transformer": 1e6}, "shapes": [[1, 8, 8], [4, 8, 8], [16, 8, 8]],
              "threads": 2, "torch": "x", "transformer_depth": 4, "memory_limit_gb": 24.0,
              "runs": {"dim": {"1x8x8": run(64, 1), "4x8x8": run(256, 1), "16x8x8": run(1024, 1)},
                       "transformer_fused": {"1x8x8": run(64, 2), "4x8x8": run(256, 2),
                                             "16x8x8": {"skipped": "predicted 90 s > 60 s", "tokens": 1024}},
                       "transformer_explicit": {"1x8x8": run(64, 2), "4x8x8": {"does_not_fit": "RuntimeError",
                                                                              "tokens": 256},
                                                "16x8x8": {"does_not_fit": "a smaller clip (4x8x8) did not fit",
                                                           "tokens": 1024}}}}
    summary = summarize_video(result)
    assert summary["dim_latency_exponent"] == pytest.approx(1.0)
    assert summary["transformer_fused_latency_exponent"] == pytest.approx(2.0)
    assert summary["transformer_explicit_first_does_not_fit"] == "4x8x8"
    assert summary["dim_largest_measured"] == "16x8x8"
    result["summary"] = summary
    table = format_video(result)
    assert "does not fit in 24 GiB" in table and "skipped (too slow)" in table


def test_bench_video_runs_skips_and_finds_where_attention_stops_fitting(monkeypatch):
    """The schedule of bench_video with fake measurements: DiM linear, attention quadratic in time, the explicit
    score matrix quadratic in memory. Slow shapes are skipped unless they are predicted not to fit."""
    import math

    import mdm.bench.timing
    from mdm.config import load_config
    from mdm.bench.video import bench_video

    limit_mb = 1024.0
    calls = []

    def fake(target, config, shape, threads, explicit, memory_limit_gb):
        n = math.prod(shape)
        calls.append((config["kind"], explicit, n))
        if config["kind"] == "bimamba2":
            return {"seconds": 1e-5 * n, "peak_mb": 0.01 * n, "repeats": 2}
        peak = 1e-5 * n * n if explicit else 0.01 * n
        if peak > memory_limit_gb * 1024:
            return {"does_not_fit": "RuntimeError: can't allocate memory"}
        return {"seconds": 1e-8 * n * n, "peak_mb": peak, "repeats": 2}

    monkeypatch.setattr(mdm.bench.timing, "in_subprocess", fake)
    shapes = ((64, 16, 16), (1, 8, 8), (4, 8, 8), (16, 8, 8), (64, 8, 8))  # unsorted on purpose
    result = bench_video(load_config("tiny", ["backbone.kind=bimamba2"]), shapes, threads=1, max_seconds=1.0,
                         memory_limit_gb=limit_mb / 1024, progress=lambda _: None)
    runs = result["runs"]
    assert [r["tokens"] for r in runs["dim"].values()] == [64, 256, 1024, 4096, 16384]  # measured small to large
    assert all("seconds" in r for r in runs["dim"].values())
    assert "skipped" in runs["transformer_fused"]["64x16x16"]  # 2.7 s predicted, and it would fit
    assert "does_not_fit" in runs["transformer_explicit"]["64x16x16"]  # slow too, but run: predicted too big
    assert ("transformer", True, 16384) in calls and ("transformer", False, 16384) not in calls
    assert result["summary"]["transformer_explicit_first_does_not_fit"] == "64x16x16"
    assert result["summary"]["dim_latency_exponent"] == pytest.approx(1.0)
