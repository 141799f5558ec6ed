"""Two CPU processes under torchrun (gloo) train the same step as one process with the same global batch."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mdm.config import load_config
from mdm.training.loop import build_model
from mdm.training.run import train_run

# lr 1e-3 without warm-up: Adam's first step moves every parameter by ~1e-3 (lr * g / |g|). A different batch
# split or different noise would move most of them differently; float summation order only perturbs the few
# elements whose gradient is near Adam's eps.
OVERRIDES = ["train.steps=1", "train.lr=1e-3", "train.warmup_steps=1", "train.batch_size=8", "train.log_every=1",
             "data.train_size=48", "data.vq_steps=3", "data.codebook_size=32", "data.vocab_size=64"]


def _torchrun(out, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mdm", "train", "--config", "tiny", "--out", str(out), "--no-progress", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    return proc


def _assert_same_step(single, multi):
    a = load_file(single / "checkpoint" / "model.safetensors")
    b = load_file(multi / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a), "the checkpoint must hold whole tensors"
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, f"largest parameter difference {worst} (the step is ~1e-3)"
    differing = sum(int(((a[k] - b[k]).abs() > 1e-7).sum()) for k in a)
    assert differing < 1e-3 * sum(v.numel() for v in a.values()), f"{differing} elements differ by > 1e-7"
    logs = [json.loads((d / "log.jsonl").read_text()) for d in (single, multi)]
    assert logs[0]["loss"] == logs[1]["loss"] and abs(logs[0]["grad_norm"] - logs[1]["grad_norm"]) < 1e-4
    vocab = json.loads((single / "checkpoint" / "config.json").read_text())["vocab_sizes"]
    initial = build_model(load_config("tiny", OVERRIDES), vocab)[0].state_dict()
    changed = [k for k in a if not torch.equal(a[k], initial[k])]
    assert len(changed) > len(a) // 2, "the step should have moved most parameters"
    return a


@pytest.fixture(scope="module")
def single_step(tmp_path_factory):
    single = tmp_path_factory.mktemp("single")
    train_run(load_config("tiny", OVERRIDES), single, progress=False, log=lambda _: None)
    return single


def _same_stage0(single, out):
    out.mkdir()
    for stage0 in ("tokenizer", "vq"):  # the same stage 0: compare the diffusion step, not two VQ trainings
        shutil.copytree(single / stage0, out / stage0)


def test_two_process_ddp_step_equals_one_process(tmp_path, single_step):
    ddp = tmp_path / "ddp"
    _same_stage0(single_step, ddp)
    _torchrun(ddp, *OVERRIDES)
    _assert_same_step(single_step, ddp)


def test_two_process_fsdp_step_equals_one_process_and_resumes_alone(tmp_path, single_step):
    """FSDP shards parameters, gradients and AdamW moments; the checkpoint it writes holds whole tensors
    (model, EMA, moments) that a single process resumes from, and then trains the same next step."""
    fsdp = tmp_path / "fsdp"
    _same_stage0(single_step, fsdp)
    proc = _torchrun(fsdp, *OVERRIDES, "train.distributed=fsdp")
    total, here = map(float, re.search(r"([\d.]+)M parameters;.*fsdp: ([\d.]+)M parameters held here",
                                       proc.stdout).groups())
    assert here < 0.6 * total, proc.stdout  # each of the 2 processes holds about half
    _assert_same_step(single_step, fsdp)
    ema = [load_file(d / "checkpoint" / "ema.safetensors") for d in (single_step, fsdp)]
    assert max(float((ema[0][k] - ema[1][k]).abs().max()) for k in ema[0]) < 1e-5
    moments = [load_file(d / "checkpoint" / "trainer.safetensors") for d in (single_step, fsdp)]
    assert moments[0].keys() == moments[1].keys()
    assert max(float((moments[0][k].double() - moments[1][k].double()).abs().max())
               for k in moments[0] if k.startswith("optimizer.") and k.endswith(".exp_avg")) < 1e-6

    # Step 2 from each checkpoint, in one process and (FSDP's) under FSDP again: the same next step.
    config = load_config("tiny", [*OVERRIDES, "train.steps=2"])
    losses = []
    for d in (single_step, fsdp):
        copy = tmp_path / f"resume-{d.name}"  # resume-single0, resume-fsdp
        shutil.copytree(d, copy)
        run = train_run(config, copy, resume=True, progress=False, log=lambda _: None)
        losses.append(run.trainer.history[-1]["loss"])
    again = tmp_path / "resume-fsdp-fsdp"
    shutil.copytree(fsdp, again)
    _torchrun(again, *OVERRIDES, "train.distributed=fsdp", "train.steps=2", "--resume")
    losses.append(json.loads((again / "log.jsonl").read_text().splitlines()[-1])["loss"])
    assert max(losses) - min(losses) < 1e-4, losses
    resumed_single = tmp_path / f"resume-{single_step.name}"
    after = [load_file(d / "checkpoint" / "model.safetensors") for d in (resumed_single, again)]
    assert max(float((after[0][k] - after[1][k]).abs().max()) for k in after[0]) < 1e-5
    moments = [load_file(d / "checkpoint" / "trainer.safetensors") for d in (resumed_single, again)]
    assert moments[0].keys() == moments[1].keys(), "the same parameters have AdamW moments"
