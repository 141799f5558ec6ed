"""The chunked SSD scan with its CPU kernel (``decayed_scores``) against its PyTorch form, interleaved.

Both forms run in one process, call after call, so that a neighbour's load falls on both alike;
the figure is each form's median over ``--repeats`` calls, in GFLOP/s and as a share of this
machine's fp32 matmul peak (``mdm bench backbone``'s measure). Shapes are the ``small`` backbone's
scan: 8 heads of 32, one group, d_state 32, chunks of 64, batch 1, no gradient.

    python benchmarks/ab_ssd_kernel.py --threads 2 --lengths 4096,16384 --out benchmarks/results/ssd-ab-cpu-kernels.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import torch

from mdm.bench.backbone import _matmul_job
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
    peak = _matmul_job(2048, args.threads)["gflops"]
    heads, head_dim, d_state, chunk = 8, 32, 32, 64
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = []
    for length in (int(v) for v in args.lengths.split(",")):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, length, heads, head_dim, generator=g)
        dt = torch.nn.functional.softplus(torch.randn(1, length, heads, generator=g) - 2)
        A = -torch.rand(heads, generator=g) * 4 - 0.5
        B, C = (torch.randn(1, length, 1, d_state, generator=g) for _ in range(2))
        flops = ssd_flops(length, heads, head_dim, 1, d_state, chunk, length)
        times: dict[bool, list[float]] = {True: [], False: []}
        with torch.no_grad():
            for _ in range(args.repeats + 1):  # the first round warms up and is dropped
                for kernel in (True, False):
                    start = time.perf_counter()
                    ssd_chunked(x, dt, A, B, C, torch.ones(heads), chunk_size=chunk, cpu_kernel_ok=kernel)
                    times[kernel].append(time.perf_counter() - start)
        for kernel in (True, False):
            seconds = statistics.median(times[kernel][1:])
            gflops = flops / seconds / 1e9
            rows.append(f"| {length} | {'C++ kernel' if kernel else 'PyTorch'} | {seconds * 1e3:.1f} | {gflops:.1f} | "
                        f"{100 * gflops / peak:.1f}% |")
    table = "\n".join(["### SSD scan: CPU kernel against PyTorch, interleaved", "",
                       "| tokens | in-chunk matrix | ms (median) | GFLOP/s | share of matmul peak |",
                       "|---|---|---|---|---|", *rows, "",
                       f"fp32, batch 1, {args.threads} threads, {args.repeats} calls a form, fp32 matmul peak "
                       f"{peak:.1f} GFLOP/s; torch {torch.__version__}, commit {commit}, load average "
                       f"{Path('/proc/loadavg').read_text().split()[0] if Path('/proc/loadavg').exists() else '?'}."])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
