"""The chunked SSD scan with its CPU kernel against its PyTorch form, interleaved.

Without a gradient (what is timed here) the kernel is the whole fused scan (``csrc/ssd_scan.cpp``).
Both forms and a 2048 x 2048 fp32 matmul run in one process, call after call, so that a neighbour's
load falls on all three alike; each figure is a median over ``--repeats`` rounds, in GFLOP/s and as
a share of the matmul's rate measured in the same rounds. Shapes are the ``small`` backbone's scan:
8 heads of 32, one group, d_state 32, chunks of 64, batch 1.

    python benchmarks/ab_ssd_kernel.py --threads 2 --lengths 4096,16384 --out benchmarks/results/ssd-ab-cpu-kernels.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from mdm.bench.train_step import machine
from mdm.nn.flops import ssd_flops
from mdm.nn.ssd import ssd_chunked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", default="4096,16384")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    square = torch.randn(2048, 2048)
    all_peaks: list[float] = []
    heads, head_dim, d_state, chunk = 8, 32, 32, 64
    commit = machine()["commit"]  # the short hash, "+dirty" with uncommitted changes
    rows = []
    for length in (int(v) for v in args.lengths.split(",")):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, length, heads, head_dim, generator=g)
        dt = torch.nn.functional.softplus(torch.randn(1, length, heads, generator=g) - 2)
        A = -torch.rand(heads, generator=g) * 4 - 0.5
        B, C = (torch.randn(1, length, 1, d_state, generator=g) for _ in range(2))
        flops = ssd_flops(length, heads, head_dim, 1, d_state, chunk, length)
        times: dict[bool, list[float]] = {True: [], False: []}
        peaks: list[float] = []
        with torch.no_grad():
            for _ in range(args.repeats + 1):  # the first round warms up and is dropped
                for kernel in (True, False):
                    start = time.perf_counter()
                    ssd_chunked(x, dt, A, B, C, torch.ones(heads), chunk_size=chunk, cpu_kernel_ok=kernel)
                    times[kernel].append(time.perf_counter() - start)
                start = time.perf_counter()
                square @ square
                peaks.append(2 * 2048**3 / (time.perf_counter() - start) / 1e9)
        peak = statistics.median(peaks[1:])
        all_peaks += peaks[1:]
        for kernel in (True, False):
            seconds = statistics.median(times[kernel][1:])
            gflops = flops / seconds / 1e9
            rows.append(f"| {length} | {'fused C++ scan' if kernel else 'PyTorch'} | {seconds * 1e3:.1f} | {gflops:.1f} | "
                        f"{100 * gflops / peak:.1f}% |")
    table = "\n".join(["### SSD scan: CPU kernel against PyTorch, interleaved", "",
                       "| tokens | scan | ms (median) | GFLOP/s | share of matmul peak |",
                       "|---|---|---|---|---|", *rows, "",
                       f"fp32, batch 1, no gradient, {args.threads} threads, {args.repeats} rounds; fp32 matmul "
                       f"{statistics.median(all_peaks):.1f} GFLOP/s (median of all rounds; a row's share is of its "
                       f"own rounds); torch {torch.__version__}, commit {commit}, load average "
                       f"{Path('/proc/loadavg').read_text().split()[0] if Path('/proc/loadavg').exists() else '?'}."])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
