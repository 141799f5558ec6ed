"""Before/after timing of ``mdm bench train-step``: two commits of this repository, in rounds that alternate.

The machine this project runs on is shared, so a figure measured at one time says
little against one measured at another. This script exports the ``before`` commit's
``src/`` with ``git archive`` into a temporary folder, then runs ``mdm bench train-step``
from it and from the working tree (``after``) in alternation, ``--rounds`` times, each
run in a fresh process; the result is the median over every timed step of every round,
per side and model, with the load average around each run.

    python benchmarks/ab_train_step.py --before f773197 --config shapesworld --threads 1 \
        --out benchmarks/results/train-step-ab-shapesworld
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export_src(commit: str, folder: Path) -> Path:
    """``src/`` of ``commit`` written under ``folder`` (no checkout: the working tree is left alone)."""
    archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def run_once(src: Path, args: argparse.Namespace, out: Path) -> dict:
    """One ``mdm bench train-step`` run with ``src`` first on the path; its JSON record."""
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-m", "mdm", "bench", "train-step", "--config", args.config, "--task", args.task,
           "--threads", str(args.threads), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--profile-steps", "0", "--out", str(out), "--in-process", *args.overrides]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    record = json.loads((out / f"train-step-{args.config}.json").read_text())
    probe = [sys.executable, "-c", "import mdm; print(mdm.__file__)"]
    used = subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not used.startswith(str(src)):
        raise RuntimeError(f"the run imported {used}, not the tree under {src}")
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="the commit to compare against (the working tree is 'after')")
    p.add_argument("--config", default="shapesworld")
    p.add_argument("--task", default="joint")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5, help="timed steps per model per run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for both sides")
    args = p.parse_args()
    after = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "src"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.strip()
    after += "+dirty" if dirty else ""
    sides = {"before": args.before, "after": after}
    times: dict[str, dict[str, list[float]]] = {s: {} for s in sides}
    phases: dict[str, dict[str, dict[str, list[float]]]] = {s: {} for s in sides}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        srcs = {"before": export_src(args.before, Path(tmp) / "before"), "after": ROOT / "src"}
        for r in range(args.rounds):
            for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
                load = os.getloadavg()[0]
                record = run_once(srcs[side], args, Path(tmp) / f"out-{side}-{r}")
                runs.append({"round": r, "side": side, "load_before": load, "load_after": os.getloadavg()[0],
                             "models": {n: {"seconds": m["seconds"], "phases": m["phases"]}
                                        for n, m in record["models"].items()}})
                for name, m in record["models"].items():
                    times[side].setdefault(name, []).extend(m["times"])
                    for phase, value in m["phases"].items():
                        phases[side].setdefault(name, {}).setdefault(phase, []).append(value)
                print(f"round {r} {side}: " + ", ".join(f"{n} {m['seconds']:.3f}s"
                                                         for n, m in record["models"].items()), flush=True)
    summary = {side: {name: {"seconds": statistics.median(ts),
                             **{p: statistics.median(v) for p, v in phases[side][name].items()}}
                      for name, ts in by_model.items()} for side, by_model in times.items()}
    loads = [r["load_before"] for r in runs] + [r["load_after"] for r in runs]
    result = {"config": args.config, "overrides": args.overrides, "task": args.task, "threads": args.threads, "rounds": args.rounds,
              "repeats": args.repeats, "commits": sides, "machine": {**record["machine"], "commit": None},
              "load_average_range": [min(loads), max(loads)], "summary": summary, "runs": runs}
    rows = [f"### train step A/B: {' '.join([args.config, *args.overrides])}, task {args.task}, batch {record['batch_size']}, "
            f"{args.threads} thread(s)", "",
            "| side | commit | model | step s | forward s | backward s | clip+AdamW+EMA s | Mamba / Transformer |",
            "|---|---|---|---|---|---|---|---|"]
    for side, by_model in summary.items():
        ratio = by_model["mamba"]["seconds"] / by_model["transformer"]["seconds"]
        for name, m in by_model.items():
            rows.append(f"| {side} | `{sides[side]}` | {name} | {m['seconds']:.4f} | {m['forward']:.4f} | "
                        f"{m['backward']:.4f} | {m['update']:.4f} | {f'{ratio:.2f}x' if name == 'mamba' else ''} |")
    speedup = summary["before"]["mamba"]["seconds"] / summary["after"]["mamba"]["seconds"]
    rows += ["", f"Mamba step before / after: {speedup:.2f}x. Medians over {args.rounds} alternating rounds of "
                 f"{args.repeats} timed steps per model (each round a fresh process, the two models interleaved "
                 f"in it); fp32, torch {record['machine']['torch']}, {record['machine']['cpu']} "
                 f"({record['machine']['cores']} cores) shared with other jobs: 1-minute load average "
                 f"{min(loads):.2f}-{max(loads):.2f} during the runs."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
