"""One SSD scan's forward and backward on CPU: the recurrent kernel against the chunked form, interleaved.

What a training step runs per scan (16 of them in the moving-digits preset's step): ``ssd_chunked`` with a
gradient. "recurrent" is that call as it is (``csrc/ssd_recurrent.cpp``); "chunked" is the same call with the
recurrent kernel hidden, i.e. the PyTorch chunked form with its ``decayed_scores`` kernel, what training ran
before. x, B and C are views of one (b, l, conv_dim) tensor, as in the mixer; ZOH, a D skip, no initial state.
Both run in one process call after call, so that a neighbour's load falls on both alike; each figure is the
median over ``--repeats`` rounds after one warm-up round.

    python benchmarks/ab_ssd_train.py --threads 1 --lengths 167,1024,4096 --out benchmarks/results/ssd-ab-recurrent.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

import mdm.nn.ssd as ssd_module
from mdm.bench.train_step import machine
from mdm.nn.ssd import ssd_chunked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lengths", default="167,1024,4096")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    b, h, p, g, n = args.batch, 8, 32, 1, 32  # the moving-digits preset's scan
    real = ssd_module.cpu_kernel

    def chunked_kernel(name: str):
        return None if name == "ssd_recurrent" else real(name)

    commit = machine()["commit"]  # the short hash, "+dirty" with uncommitted changes
    rows, loads = [], [os.getloadavg()[0]]
    for length in (int(v) for v in args.lengths.split(",")):
        gen = torch.Generator().manual_seed(0)
        xBC = torch.randn(b, length, h * p + 2 * g * n, generator=gen, requires_grad=True)
        dt = torch.nn.functional.softplus(torch.randn(b, length, h, generator=gen) - 2).requires_grad_()
        A = (-torch.rand(h, generator=gen) * 4 - 0.5).requires_grad_()
        D = torch.ones(h, requires_grad=True)
        grad_y = torch.randn(b, length, h, p, generator=gen)
        times: dict[str, tuple[list[float], list[float]]] = {"chunked": ([], []), "recurrent": ([], [])}
        for round_ in range(args.repeats + 1):  # the first round warms up and is dropped
            for form in times:
                ssd_module.cpu_kernel = chunked_kernel if form == "chunked" else real
                try:
                    start = time.perf_counter()
                    x, B, C = torch.split(xBC, [h * p, g * n, g * n], dim=-1)
                    y, _ = ssd_chunked(x.reshape(b, length, h, p), dt, A, B.reshape(b, length, g, n),
                                       C.reshape(b, length, g, n), D)
                    middle = time.perf_counter()
                    torch.autograd.backward(y, grad_y)
                    stop = time.perf_counter()
                finally:
                    ssd_module.cpu_kernel = real
                xBC.grad = dt.grad = A.grad = D.grad = None
                if round_:
                    times[form][0].append(middle - start)
                    times[form][1].append(stop - middle)
        loads.append(os.getloadavg()[0])
        totals = {form: statistics.median(f + w for f, w in zip(*t)) for form, t in times.items()}
        for form, (fwd, bwd) in times.items():
            ratio = f"{totals['chunked'] / totals[form]:.2f}x" if form == "recurrent" else ""
            rows.append(f"| {length} | {form} | {statistics.median(fwd) * 1e3:.2f} | "
                        f"{statistics.median(bwd) * 1e3:.2f} | {totals[form] * 1e3:.2f} | {ratio} |")
        print(rows[-2], rows[-1], sep="\n", flush=True)
    table = "\n".join(["### SSD scan with a gradient: recurrent kernel against the chunked form, interleaved", "",
                       "| tokens | scan | forward ms | backward ms | total ms (median) | chunked / recurrent |",
                       "|---|---|---|---|---|---|", *rows, "",
                       f"fp32, batch {b}, 8 heads of 32, one group, d_state 32, ZOH with D, no initial state; "
                       f"{args.threads} thread(s), {args.repeats} rounds; torch {torch.__version__}, commit {commit}, "
                       f"1-minute load average {min(loads):.2f}-{max(loads):.2f} (a shared 2-core machine)."])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
