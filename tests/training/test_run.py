"""A run in a folder: exact resumption, Ctrl-C, non-finite losses, bad output folders."""

import itertools
import json
import math
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from mdm.config import ConfigError, load_config
from mdm.pipeline import MDMPipeline
from mdm.training.loop import NonFiniteLossError, Trainer, build_model, missing_compiler
from mdm.training.optimizer import lr_at
from mdm.training.run import train_run

TINY = ["train.log_every=1", "train.batch_size=4", "data.train_size=48", "data.vq_steps=3",
        "data.codebook_size=32", "data.vocab_size=64"]


def tiny(steps: int, *extra: str):
    return load_config("tiny", TINY + [f"train.steps={steps}", *extra])


def losses(folder) -> dict[int, float]:
    """Loss per step from log.jsonl."""
    out = {}
    for line in (folder / "log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        out[entry["step"]] = entry["loss"]
    return out


class Crash(Exception):
    pass


@pytest.mark.parametrize("decay,vae_scale,curriculum", [("constant", 1.0, 0), ("linear", 1.0, 0),
                                                        ("constant", 0.25, 0), ("constant", 1.0, 4)])
def test_resume_after_a_crash_repeats_the_uninterrupted_run_exactly(tmp_path, decay, vae_scale, curriculum):
    # log_every=2 with a checkpoint at the odd step 3: the half-filled log window is saved and restored too.
    # A decay over train.steps depends on the step only, so it resumes exactly as well; so do two rate groups,
    # and a curriculum that ends after the checkpoint (the resumed run draws its step 4 from the curriculum).
    extra = ("train.checkpoint_every=3", "train.log_every=2", f"train.lr_decay={decay}",
             f"train.vae_lr_scale={vae_scale}", f"train.curriculum_steps={curriculum}",
             "train.curriculum_task_weights={text_to_image: 1.0}")
    full = train_run(tiny(6, *extra), tmp_path / "full", progress=False, log=lambda _: None)

    def crash_at_4(trainer, entry):
        if trainer.step == 4:  # after the step-3 checkpoint: step 4 is lost
            raise Crash

    with pytest.raises(Crash):
        train_run(tiny(6, *extra), tmp_path / "cut", progress=False, log=lambda _: None, on_log=crash_at_4)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "config.json").read_text())["step"] == 3
    resumed = train_run(tiny(6, *extra), tmp_path / "cut", resume=True, progress=False, log=lambda _: None)
    assert resumed.resumed_from == 3
    assert [h["step"] for h in resumed.trainer.history] == [4, 6]
    drop_time = lambda h: {k: v for k, v in h.items() if k != "time_s"}  # noqa: E731
    assert [drop_time(h) for h in resumed.trainer.history] == [drop_time(h) for h in full.trainer.history[1:]]
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
    for name in ("model.safetensors", "ema.safetensors", "trainer.safetensors"):
        a = load_file(tmp_path / "full" / "checkpoint" / name)
        b = load_file(tmp_path / "cut" / "checkpoint" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_curriculum_draws_its_own_tasks_first_then_the_mixture(tmp_path):
    config = tiny(12, "train.curriculum_steps=5", "train.curriculum_task_weights={joint: 0, text_to_image: 2.0}")
    history = train_run(config, tmp_path / "run", progress=False, log=lambda _: None).trainer.history
    drawn = [[k[len("se_"):] for k in h if k.startswith("se_")] for h in history]  # log_every=1: one task a step
    assert drawn[:5] == [["text_to_image"]] * 5
    assert {t for d in drawn[5:] for t in d} - {"text_to_image"}  # then the whole mixture, by its weights


@pytest.mark.parametrize("steps,says", [(3, True), (6, False)])
def test_a_run_that_stops_inside_its_curriculum_says_which_tasks_never_trained(tmp_path, steps, says):
    config = tiny(steps, "train.curriculum_steps=5", "train.curriculum_task_weights={text_to_image: 1.0}")
    lines: list[str] = []
    train_run(config, tmp_path / "run", progress=False, log=lines.append)
    notes = [line for line in lines if "inside its curriculum" in line]
    if says:
        untrained = sorted(t for t, w in config.train.task_weights.items() if w > 0 and t != "text_to_image")
        assert notes == [f"note: the run stopped at step 3, inside its curriculum (train.curriculum_steps = 5), so "
                         f"{', '.join(untrained)} never trained; continue it past step 5: mdm train --out "
                         f"{tmp_path / 'run'} --resume (with train.steps=N if it reached its steps)"]
        assert untrained  # the tiny mixture has tasks beyond the curriculum's
    else:
        assert notes == []


@pytest.mark.parametrize("override,message", [
    ("train.curriculum_steps=3", r"train.curriculum_steps = 3 needs train.curriculum_task_weights with a weight > 0"),
    ("train.curriculum_steps=-1", r"train.curriculum_steps must be an integer >= 0, got -1"),
    ("train.curriculum_task_weights={vqa: -1}", r"train.curriculum_task_weights.vqa must be a number >= 0")])
def test_a_curriculum_without_a_task_or_with_bad_numbers_is_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        tiny(4, override)


@pytest.mark.parametrize("decay,final,shape", [
    ("linear", 0.0, lambda p: 1 - p),
    ("cosine", 0.2, lambda p: 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * p))),
])
def test_the_learning_rate_decays_over_the_steps_times_the_warm_up(tmp_path, decay, final, shape):
    config = tiny(6, "train.lr=1e-3", "train.warmup_steps=2", f"train.lr_decay={decay}",
                  f"train.lr_final_fraction={final}")
    history = train_run(config, tmp_path / "run", progress=False, log=lambda _: None).trainer.history
    # step k (1-based) trains with the rate of progress (k - 1) / 6, times the warm-up ramp min(1, k / 2)
    expected = [1e-3 * min(1.0, k / 2) * shape((k - 1) / 6) for k in range(1, 7)]
    assert [h["lr"] for h in history] == pytest.approx(expected)
    assert lr_at(3, config.train) == pytest.approx(expected[3])  # the default progress is step / train.steps
    constant = tiny(6, "train.warmup_steps=1").train
    assert lr_at(3, constant, progress=0.9) == pytest.approx(constant.lr)  # a constant rate ignores progress


def test_the_vae_trains_at_its_share_of_the_rate_and_a_zero_share_freezes_it(tmp_path):
    def trained(scale: float):
        config = tiny(3, "train.lr=1e-2", "train.warmup_steps=1", f"train.vae_lr_scale={scale}")
        trainer = train_run(config, tmp_path / f"run{scale}", progress=False, log=lambda _: None).trainer
        initial = dict(build_model(config, trainer.network.vocab_sizes)[0].named_parameters())
        moved = {name: (p - initial[name]).abs().max().item()
                 for name, p in trainer.network.named_parameters()}
        return trainer, moved

    frozen, moved = trained(0.0)
    assert [g["lr"] for g in frozen.optimizer.param_groups] == pytest.approx([1e-2, 0.0])
    assert all(moved[n] == 0.0 for n in moved if n.startswith("vae."))
    assert max(moved[n] for n in moved if n.startswith("backbone.")) > 0.0
    half, moved_half = trained(0.5)
    assert [g["lr"] for g in half.optimizer.param_groups] == pytest.approx([1e-2, 5e-3])
    assert max(moved_half[n] for n in moved_half if n.startswith("vae.")) > 0.0
    one, _ = trained(1.0)
    assert len(one.optimizer.param_groups) == 1  # a run without the option keeps its checkpoints' one group


@pytest.mark.parametrize("scale", ["1.5", "-0.1"])
def test_a_vae_rate_share_outside_zero_to_one_is_refused(scale):
    with pytest.raises(ConfigError, match=r"train.vae_lr_scale is a share of train.lr in \[0, 1\]"):
        tiny(1, f"train.vae_lr_scale={scale}")


def test_a_time_budget_ends_the_decay_when_it_ends_before_the_steps(tmp_path, monkeypatch):
    ticks = itertools.count()
    monkeypatch.setattr("mdm.training.loop.time.perf_counter", lambda: float(next(ticks)))  # a clock of 1 s a call
    config = tiny(100, "train.lr=1e-3", "train.warmup_steps=1", "train.lr_decay=linear")
    trainer = train_run(config, tmp_path / "run", progress=False, log=lambda _: None, time_budget_s=30.0).trainer
    rates = [h["lr"] for h in trainer.history]
    assert 3 <= trainer.step < 100  # the budget stopped the run
    assert all(a > b for a, b in zip(rates, rates[1:]))
    # the budget leads: every step's rate is below what its step alone gives, and the last is near the end
    assert all(rate < 1e-3 * (1 - k / 100) for k, rate in enumerate(rates))
    assert rates[-1] < 0.25e-3


def test_resume_refuses_a_config_that_would_change_the_run(tmp_path):
    train_run(tiny(1), tmp_path / "run", progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match=r"would not continue it exactly; start a new --out instead: train.lr: 0.002 != 0.0001"):
        train_run(tiny(2, "train.lr=2e-3"), tmp_path / "run", resume=True, progress=False, log=lambda _: None)
    # more steps and other intervals continue the same run
    result = train_run(tiny(2, "train.checkpoint_every=7"), tmp_path / "run", resume=True, progress=False,
                       log=lambda _: None)
    assert result.resumed_from == 1 and result.trainer.step == 2
    # but not when train.steps is the length of a decaying rate
    train_run(tiny(1, "train.lr_decay=linear"), tmp_path / "decay", progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match=r"train.steps: 2 != 1 \(train.steps is the length of the run's "
                                         r"train.lr_decay linear\)"):
        train_run(tiny(2, "train.lr_decay=linear"), tmp_path / "decay", resume=True, progress=False,
                  log=lambda _: None)


@pytest.mark.skipif(missing_compiler(torch.device("cpu")) is not None, reason="no C++ compiler for torch.compile")
def test_compiled_blocks_train_as_the_eager_ones_and_save_the_same_checkpoint(tmp_path):
    import torch._dynamo

    fast = ("train.lr=1e-2", "train.warmup_steps=1")  # large steps, so a wrong gradient would show in the weights
    eager = train_run(tiny(3, *fast), tmp_path / "eager", progress=False, log=lambda _: None)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train_run(tiny(3, *fast, "train.compile=true"), tmp_path / "compiled", progress=False,
                         log=lambda _: None)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # inductor ran, not an eager fallback
    # the same computation up to the order of float sums: the fused kernels round differently
    a, b = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert a.keys() == b.keys() == {1, 2, 3}
    assert all(math.isclose(a[k], b[k], rel_tol=1e-4) for k in a), (a, b)
    init = build_model(tiny(3, *fast), eager.trainer.network.vocab_sizes)[0].state_dict()  # seeded: the runs' start
    x = load_file(tmp_path / "eager" / "checkpoint" / "model.safetensors")
    y = load_file(tmp_path / "compiled" / "checkpoint" / "model.safetensors")
    assert x.keys() == y.keys()
    moved = sum(float((x[k] - init[k]).abs().sum()) for k in x)
    assert moved > 1.0  # three steps at lr 1e-2 moved the weights
    assert sum(float((x[k] - y[k]).abs().sum()) for k in x) < 1e-3 * moved
    # compiling is not part of the run's definition: a compiled run resumes eagerly
    resumed = train_run(tiny(4, *fast), tmp_path / "compiled", resume=True, progress=False, log=lambda _: None)
    assert resumed.resumed_from == 3 and resumed.trainer.step == 4


def test_compiling_without_a_compiler_trains_eagerly_and_says_why_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler++")
    said = []
    result = train_run(tiny(2, "train.compile=true"), tmp_path / "run", progress=False, log=said.append)
    assert result.trainer.step == 2
    assert all(block._compiled_call_impl is None for block in result.trainer.network.backbone.blocks)
    reasons = [line for line in said if line.startswith("train.compile:")]
    assert reasons == [reasons[0]] and "'no-such-compiler++'" in reasons[0] and "eager" in reasons[0]


def test_compile_blocks_without_a_compiler_warns_and_leaves_them_eager(monkeypatch):
    from mdm.training.loop import compile_blocks

    monkeypatch.setenv("CXX", "no-such-compiler++")
    network, _ = build_model(tiny(1), {"text": 64, "image": 32})
    with pytest.warns(UserWarning, match=r"train.compile: .*'no-such-compiler\+\+'.*run eagerly"):
        assert compile_blocks(network) is False
    assert all(block._compiled_call_impl is None for block in network.backbone.blocks)


def test_benchmarks_asked_to_compile_without_a_compiler_refuse(tmp_path, monkeypatch, capsys):
    from mdm.cli import main

    monkeypatch.setenv("CXX", "no-such-compiler++")
    for what in ("train-step", "backbone"):
        assert main(["bench", what, "--config", "tiny", "--compile", "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "--compile: torch.compile on a CPU builds C++ kernels" in err and "Traceback" not in err


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

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup
    result = train_run(tiny(50), tmp_path / "run", progress=False, log=lambda _: None, on_log=interrupt_at_2)
    assert result.trainer.interrupted and result.trainer.step == 2
    assert json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["step"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is restored


def test_non_finite_loss_names_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from mdm.diffusion.multimodal import MultimodalDiffusion

    real, real_step = MultimodalDiffusion.training_losses, Trainer.train_step
    steps = {"n": 0}  # counted by step: the memory probe also runs the losses, before the first step

    def counted(self, *args, **kwargs):
        steps["n"] += 1
        return real_step(self, *args, **kwargs)

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if steps["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(Trainer, "train_step", counted)
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


def test_sample_grids_are_written_every_sample_every_steps(tmp_path, monkeypatch):
    from mdm.evaluation import figures

    judged = []  # the tiny preset is ShapesWorld: the referee judges each grid's 8 captions
    monkeypatch.setattr(figures, "score_caption", lambda image, caption: judged.append(caption) or {"all_true": False})
    # independent of log_every: grids at steps 2 and 4 although the log is written at 3
    train_run(tiny(4, "train.sample_every=2", "train.log_every=3"), tmp_path / "run", progress=False,
              log=lambda _: None)
    grids = sorted(p.name for p in (tmp_path / "run" / "samples").glob("*.png"))
    assert grids == ["step-0000002.png", "step-0000004.png"]
    assert (tmp_path / "run" / "samples" / grids[0]).stat().st_size > 2000
    assert len(judged) == 16


def test_a_class_folder_on_disk_trains_class_to_image(tmp_path):
    from PIL import Image

    for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        folder = tmp_path / "images" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20, 20), tuple(v // (i + 1) for v in colour)).save(folder / f"{i}.png")
    config = tiny(2, "data.name=imagefolder", f"data.path={tmp_path / 'images'}")
    result = train_run(config, tmp_path / "run", progress=False, log=lambda _: None)
    assert {e.get("se_class_to_image") is not None for e in result.trainer.history} == {True}
    assert result.data.tokenizer is None and result.data.train.labels.tolist().count(1) == 4
    with pytest.raises(ValueError, match="the data has 2 classes but backbone.n_classes is 1"):
        train_run(tiny(1, "data.name=imagefolder", f"data.path={tmp_path / 'images'}", "backbone.n_classes=1"),
                  tmp_path / "run1", progress=False, log=lambda _: None)


def test_log_jsonl_holds_each_step_once_after_a_resume(tmp_path):
    def crash_at_5(trainer, entry):
        if trainer.step == 5:  # steps 4 and 5 were logged after the step-3 checkpoint, then lost
            raise Crash

    with pytest.raises(Crash):
        train_run(tiny(6, "train.checkpoint_every=3"), tmp_path, progress=False, log=lambda _: None,
                  on_log=crash_at_5)
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a line the kill cut short
    train_run(tiny(6, "train.checkpoint_every=3"), tmp_path, resume=True, progress=False, log=lambda _: None)
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_warped_self_conditioned_run_saves_its_warp_plots_it_and_samples_with_it(tmp_path):
    result = train_run(tiny(6, "diffusion.time_warping=true", "diffusion.self_conditioning=true",
                            "train.checkpoint_every=3"), tmp_path / "run", progress=False, log=lambda _: None)
    assert (tmp_path / "run" / "time-warp.png").stat().st_size > 0
    state = load_file(tmp_path / "run" / "checkpoint" / "model.safetensors")
    assert state["level_stats_text"][1].sum() > 0 and "self_cond_in.weight" in state
    assert torch.equal(state["level_stats_text"], result.trainer.network.level_stats("text").cpu())
    pipe = MDMPipeline.from_pretrained(tmp_path / "run", use_ema=False)
    assert torch.equal(pipe.network.level_stats("text"), state["level_stats_text"])
    from mdm.diffusion.sampling import SamplerConfig
    assert len(pipe.image_to_text(torch.rand(1, 3, 16, 16), SamplerConfig(steps=3))) == 1
