"""A run in a folder: exact resumption, Ctrl-C, non-finite losses, bad output folders."""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from mdm.config import load_config
from mdm.tasks import MDMPipeline
from mdm.training.loop import NonFiniteLossError
from mdm.training.run import train_run

TINY = ["train.log_every=1", "train.batch_size=4", "data.train_size=48", "data.vq_steps=3",
        "data.codebook_size=32", "data.vocab_size=64"]


def tiny(steps: int, *extra: str):
    return load_config("tiny", TINY + [f"train.steps={steps}", *extra])


def losses(folder) -> dict[int, float]:
    """Loss per step from log.jsonl; a step logged twice (before a crash and after resuming) keeps the last."""
    out = {}
    for line in (folder / "log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        out[entry["step"]] = entry["loss"]
    return out


class Crash(Exception):
    pass


def test_resume_after_a_crash_repeats_the_uninterrupted_run_exactly(tmp_path):
    full = train_run(tiny(6, "train.checkpoint_every=3"), tmp_path / "full", progress=False, log=lambda _: None)
    reference = [h["loss"] for h in full.trainer.history]

    def crash_at_5(trainer, entry):
        if trainer.step == 5:  # after the step-3 checkpoint: steps 4 and 5 are lost
            raise Crash

    with pytest.raises(Crash):
        train_run(tiny(6, "train.checkpoint_every=3"), tmp_path / "cut", progress=False, log=lambda _: None,
                  on_log=crash_at_5)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "config.json").read_text())["step"] == 3
    resumed = train_run(tiny(6, "train.checkpoint_every=3"), tmp_path / "cut", resume=True, progress=False,
                        log=lambda _: None)
    assert resumed.resumed_from == 3
    assert [h["loss"] for h in resumed.trainer.history] == reference[3:]
    assert list(losses(tmp_path / "cut").values()) == list(losses(tmp_path / "full").values())
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "full" / "checkpoint" / name)
        b = load_file(tmp_path / "cut" / "checkpoint" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_run_folder_loads_as_a_pipeline(tmp_path):
    train_run(tiny(2), tmp_path / "run", progress=False, log=lambda _: None)
    pipe = MDMPipeline.from_pretrained(tmp_path / "run")
    assert pipe.tokenizer is not None and pipe.vq is not None
    assert pipe.text_lens["caption"] == 28
    out = pipe.text_to_image(["a red circle"], __import__("mdm.diffusion.sampling", fromlist=["x"]).SamplerConfig(steps=2))
    assert out.shape == (1, 3, 16, 16)


def test_ctrl_c_finishes_the_step_saves_and_stops(tmp_path):
    def interrupt_at_2(trainer, entry):
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    result = train_run(tiny(50), tmp_path / "run", progress=False, log=lambda _: None, on_log=interrupt_at_2)
    assert result.trainer.interrupted and result.trainer.step == 2
    assert json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_non_finite_loss_names_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from mdm.diffusion.process import MultimodalDiffusion

    real = MultimodalDiffusion.training_losses
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        out = real(self, *args, **kwargs)
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(MultimodalDiffusion, "training_losses", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        train_run(tiny(5, "train.checkpoint_every=1"), tmp_path / "run", progress=False, log=lambda _: None)
    assert json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["step"] == 2
    MDMPipeline.from_pretrained(tmp_path / "run")  # still loadable


def test_bad_output_folders_are_clear_errors(tmp_path):
    train_run(tiny(1), tmp_path / "run", progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match="already holds a run: pass --resume"):
        train_run(tiny(1), tmp_path / "run", progress=False, log=lambda _: None)
    with pytest.raises(FileNotFoundError, match="no checkpoint/ to resume"):
        train_run(tiny(1), tmp_path / "empty", resume=True, progress=False, log=lambda _: None)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match="cannot create the output folder"):
        train_run(tiny(1), tmp_path / "a-file" / "run", progress=False, log=lambda _: None)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root)")
        with pytest.raises(ValueError, match="not writable"):
            train_run(tiny(1), locked / "run", progress=False, log=lambda _: None)
    finally:
        locked.chmod(0o700)


def test_resume_with_a_different_model_config_is_refused(tmp_path):
    train_run(tiny(1), tmp_path / "run", progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match=r"backbone.d_model: 64 != 32"):
        train_run(tiny(2, "backbone.d_model=64"), tmp_path / "run", resume=True, progress=False,
                  log=lambda _: None)
