"""Checkpoints written before the process refactor sample and score bit-identically with the current code.

The fixtures (tests/fixtures/old-checkpoints, README.md there) were recorded with the
diffusion code of commit 6432f5c (``mdm.diffusion.process``): two tiny trained models,
one on VQ image states and one on raw pixel patches, and the outputs of ``sample`` and
``target_loss`` for every case of ``cases.json`` (caption -> image, image -> caption,
joint, class -> image, caption -> video in frame passes; DPM-Solver++ and DDPM;
multi-step selection cosine, linear and off; guidance 0, 1 and 3; the analytic
offset). The Gaussian processes must give the
same tokens, patch values and scores from the same seeds, and through the same network
calls: each case also recorded checksums of the inputs and outputs of every call of
``MultimodalDiffusion.logits``, since a tiny model's argmax tokens can stay the same
when the trajectory under them has moved.

The recorded floats are those of one CPU thread on the recording platform. Each model's
raw network forward was recorded too. Where it is bit-equal here, the replays must be
bit-identical. Another CPU rounds differently (an AMD EPYC gives the forward within
1.5e-6 of the recording): there the forward must still match to float32 rounding
(a changed network fails), the replays must give the same tokens, and patch values,
scores and every trace checksum must agree within ``REPLAY_RTOL`` / ``REPLAY_ATOL``
(the worst seen on that EPYC needed rtol 1.5e-6 at atol 1e-4).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mdm.diffusion.likelihood import target_loss
from mdm.diffusion.multimodal import MultimodalDiffusion, Segment
from mdm.diffusion.sampling import SamplerConfig, sample
from mdm.nn.layout import SegmentSpec
from mdm.checkpoint import load_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "old-checkpoints"
META = json.loads((FIXTURES / "cases.json").read_text())
CASES = {case["name"]: case for case in META["cases"]}


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixtures were recorded with one thread
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def recorded():
    return load_file(str(FIXTURES / "expected.safetensors"))


@pytest.fixture(scope="module")
def models(one_thread):
    out = {}
    for name in ("vq", "pixels"):
        ck = load_checkpoint(FIXTURES / name)
        ck.network.eval()
        out[name] = (ck.network, MultimodalDiffusion(ck.config.diffusion, ck.config.vae))
    return out


def specs() -> dict[str, SegmentSpec]:
    return {k: getattr(SegmentSpec, f)(*args) for k, (f, args) in META["specs"].items()}


def forward(network) -> list[torch.Tensor]:
    """The probe of make_fixtures.forward_probe: the raw network on a fixed input."""
    g = torch.Generator().manual_seed(200)
    s = specs()
    layout = network.make_layout([s["text"], s["image"]])
    b, n = META["batch"], s["text"].n_content + s["image"].n_content
    z = torch.randn(b, n, network.vae_config.d_latent, generator=g)
    tau = torch.randint(0, 1001, (b, n), generator=g).float()
    seg_tau = torch.randint(1, 1001, (b, 2), generator=g).float()
    with torch.no_grad():
        return network(z, tau, seg_tau, layout, torch.tensor([0, 1, 4]))


FORWARD_TOLERANCE = 1e-5  # float32 rounding of another CPU, not another network
REPLAY_RTOL, REPLAY_ATOL = 1e-5, 1e-4


def forward_matches(network, recorded, model: str, exact: bool = True) -> bool:
    """Whether the raw forward is the recorded one: bit-equal, or (``exact=False``) to float32 rounding."""
    def same(out: torch.Tensor, expected: torch.Tensor) -> bool:
        if exact:
            return torch.equal(out, expected)
        return torch.allclose(out, expected, rtol=FORWARD_TOLERANCE, atol=FORWARD_TOLERANCE)
    return all(same(out, recorded[f"forward/{model}/{k}"]) for k, out in enumerate(forward(network)))


def agree(out: torch.Tensor, expected: torch.Tensor, exact: bool) -> bool:
    """Bit-equal on the recording platform; elsewhere tokens equal and floats within the replay tolerance."""
    if exact or not out.is_floating_point():
        return torch.equal(out, expected)
    return torch.allclose(out, expected, rtol=REPLAY_RTOL, atol=REPLAY_ATOL)


@pytest.fixture(scope="module")
def match(models, recorded) -> dict[str, str]:
    """Per model, how its raw forward matches the recording: "exact", "rounding" (another CPU) or "differs"."""
    def how(model: str) -> str:
        network = models[model][0]
        if forward_matches(network, recorded, model):
            return "exact"
        return "rounding" if forward_matches(network, recorded, model, exact=False) else "differs"
    return {model: how(model) for model in models}


def inputs_of(recorded, model: str) -> dict[str, torch.Tensor]:
    prefix = f"input/{model}/"
    return {k[len(prefix):]: v for k, v in recorded.items() if k.startswith(prefix)}


def digest(t: torch.Tensor | None) -> float:
    """make_fixtures.digest: an order-sensitive float64 checksum of a tensor (0 for None)."""
    if t is None:
        return 0.0
    x = t.detach().double().flatten()
    return float((x * torch.cos(torch.arange(x.numel(), dtype=torch.float64))).sum() + x.sum())


TRACE_COLUMNS = ["z", "tau", "segment_tau", "class_labels", "guidance_scale", "uncond z", "uncond tau",
                 "uncond segment_tau", "uncond class_labels"]  # then one output per segment


def replay(case: dict, network, diffusion: MultimodalDiffusion,
           inputs: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """make_fixtures.run_case with the current code (Segment from mdm.diffusion.multimodal): the outputs and
    the trace, per call of ``diffusion.logits`` checksums of its inputs and guided outputs."""
    s = specs()
    if case["analytic_offset"]:
        diffusion = MultimodalDiffusion(replace(diffusion.config, analytic_offset=True), diffusion.vae_config)
    trace, logits = [], diffusion.logits

    def traced(network, z, tau, segment_tau, layout, class_labels=None, guidance_scale=1.0, uncond=None):
        out = logits(network, z, tau, segment_tau, layout, class_labels, guidance_scale, uncond)
        row = [digest(z), digest(tau), digest(segment_tau), digest(class_labels), float(guidance_scale)]
        trace.append(row + [digest(u) for u in (uncond or (None,) * 4)] + [digest(o) for o in out])
        return out

    diffusion.logits = traced  # on this instance only
    try:
        if case["kind"] == "target_loss":
            segs = [Segment(s[m], inputs[m], target=r == "target") for m, r in case["segments"]]
            out = [target_loss(network, diffusion, segs, n_levels=case["n_levels"], seed=case["seed"])]
        else:
            segs = [Segment(s[m], inputs[m] if r == "cond" else None, target=r == "target")
                    for m, r in case["segments"]]
            classes = inputs["classes"] if case["classes"] else None
            out = sample(network, diffusion, segs, class_labels=classes, config=SamplerConfig(**case["sampler"]),
                         batch_size=case["batch_size"], generator=torch.Generator().manual_seed(case["seed"]))
    finally:
        del diffusion.logits
    return out, torch.tensor(trace, dtype=torch.float64)


def first_difference(trace: torch.Tensor, expected: torch.Tensor, exact: bool = True) -> str:
    if trace.shape != expected.shape:
        return f"{trace.shape[0]} calls of diffusion.logits ({trace.shape[1]} checksums each), recorded " \
               f"{expected.shape[0]} ({expected.shape[1]})"
    differs = trace != expected if exact else ~torch.isclose(trace, expected, rtol=REPLAY_RTOL, atol=REPLAY_ATOL)
    call, col = differs.nonzero()[0].tolist()
    what = TRACE_COLUMNS[col] if col < len(TRACE_COLUMNS) else f"output of segment {col - len(TRACE_COLUMNS)}"
    return f"call {call} of diffusion.logits first differs in its {what}"


@pytest.mark.parametrize("model", ["vq", "pixels"])
def test_the_network_forward_is_the_recorded_one(match, model):
    assert match[model] != "differs", (
        f"the raw network forward of the {model} fixture differs from its recording "
        f"({META['recorded_with']}; here torch {torch.__version__}) by more than float32 rounding: the network "
        f"changed, so the old checkpoints no longer mean what they meant. If the old code gives other floats "
        f"here too, regenerate the fixtures with tests/fixtures/old-checkpoints/make_fixtures.py (README.md there).")


def test_replay_tolerances_catch_a_moved_trajectory():
    """The cross-platform tolerance is far below what a real change moves: the README's null input scaled by
    1.0001 (which left every VQ token unchanged) moves a trace checksum by 1e-4 of itself."""
    checksum = torch.tensor([12.5, -3.25], dtype=torch.float64)
    assert agree(checksum * (1 + 1e-6), checksum, exact=False)
    assert not agree(checksum * (1 + 1e-4), checksum, exact=False)
    assert not agree(checksum * (1 + 1e-12), checksum, exact=True)
    assert not agree(torch.tensor([3, 4]), torch.tensor([3, 5]), exact=False)


@pytest.mark.parametrize("name", list(CASES))
def test_old_checkpoint_replays_identically(models, recorded, match, name):
    case = CASES[name]
    network, diffusion = models[case["model"]]
    exact = match[case["model"]] == "exact"
    if match[case["model"]] == "differs":
        pytest.skip("the raw network forward differs from the recording (see test_the_network_forward_is_"
                    "the_recorded_one)")
    how = "bit-identically" if exact else f"within rtol {REPLAY_RTOL} / atol {REPLAY_ATOL} (this CPU rounds otherwise)"
    inputs = inputs_of(recorded, case["model"])
    torch.manual_seed(0)  # as when recorded
    out, trace = replay(case, network, diffusion, inputs)
    if case["kind"] == "target_loss":
        expected = recorded[f"case/{name}/0"]
        assert agree(out[0], expected, exact), \
            f"{name}: target_loss {out[0].tolist()} != recorded {expected.tolist()} ({how})"
    else:
        assert len(out) == len(case["segments"])
        for k, (modality, role) in enumerate(case["segments"]):
            if role == "cond":
                assert torch.equal(out[k], inputs[modality]), f"{name}: condition segment {k} came back changed"
                continue
            expected = recorded[f"case/{name}/{k}"]
            assert out[k].dtype == expected.dtype and out[k].shape == expected.shape
            assert agree(out[k], expected, exact), (
                f"{name}: segment {k} ({modality}) differs from the old code's output at "
                f"{(out[k] != expected).sum().item()} of {expected.numel()} values ({how})")
    # The same outputs could hide another trajectory (a tiny model's argmax tokens barely move): the
    # inputs and outputs of every network call must be the recorded ones too.
    expected = recorded[f"trace/{name}"]
    assert trace.shape == expected.shape and agree(trace, expected, exact), \
        f"{name}: same outputs, other trajectory: {first_difference(trace, expected, exact)} ({how})"
