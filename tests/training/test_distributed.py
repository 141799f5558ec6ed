"""Two CPU processes under torchrun (gloo) train the same step as one process with the same global batch."""

import json
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file

from mdm.config import load_config
from mdm.training.loop import build_model
from mdm.training.run import train_run

# lr 1e-3 without warm-up: Adam's first step moves every parameter by ~1e-3 (lr * g / |g|). A different batch
# split or different noise would move most of them differently; float summation order only perturbs the few
# elements whose gradient is near Adam's eps.
OVERRIDES = ["train.steps=1", "train.lr=1e-3", "train.warmup_steps=1", "train.batch_size=8", "train.log_every=1", "data.train_size=48", "data.vq_steps=3",
             "data.codebook_size=32", "data.vocab_size=64"]


def test_two_process_ddp_step_equals_one_process(tmp_path):
    single = tmp_path / "single"
    train_run(load_config("tiny", OVERRIDES), single, progress=False, log=lambda _: None)
    ddp = tmp_path / "ddp"
    ddp.mkdir()
    for stage0 in ("tokenizer", "vq"):  # the same stage 0: compare the diffusion step, not two VQ trainings
        shutil.copytree(single / stage0, ddp / stage0)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mdm", "train", "--config", "tiny", "--out", str(ddp), "--no-progress", *OVERRIDES]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    a = load_file(single / "checkpoint" / "model.safetensors")
    b = load_file(ddp / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, f"largest parameter difference {worst} (the step is ~1e-3)"
    differing = sum(int(((a[k] - b[k]).abs() > 1e-7).sum()) for k in a)
    assert differing < 1e-3 * sum(v.numel() for v in a.values()), f"{differing} elements differ by > 1e-7"
    logs = [json.loads((d / "log.jsonl").read_text()) for d in (single, ddp)]
    assert logs[0]["loss"] == logs[1]["loss"] and abs(logs[0]["grad_norm"] - logs[1]["grad_norm"]) < 1e-4
    vocab = json.loads((single / "checkpoint" / "config.json").read_text())["vocab_sizes"]
    initial = build_model(load_config("tiny", OVERRIDES), vocab)[0].state_dict()
    changed = [k for k in a if not torch.equal(a[k], initial[k])]
    assert len(changed) > len(a) // 2, "the step should have moved most parameters"
