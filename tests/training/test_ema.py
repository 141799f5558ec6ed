"""The EMA's power average against a direct weighted mean, its cap, and the config's checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mdm.config import ConfigError, TrainConfig
from mdm.training.ema import EMA, ema_cap_step, ema_decay_at, ema_window_note


def _averaged(power: float, decay: float, values: list[float]) -> float:
    """The EMA of a one-weight module whose weight takes ``values`` after steps 0, 1, ..."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(-100.0)  # the initial weight, which the first update must forget
    ema = EMA(model, decay, power)
    for step, v in enumerate(values):
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update(model, step)
    return float(ema.model.weight)


def _power_mean(power: float, values: list[float], initial: float = -100.0) -> float:
    """The slow reference: each step's share multiplied out from the per-step decays (the initial weight's is
    the product of them all)."""
    n = len(values)
    total = initial
    for j in range(n):
        total *= (1 + j) / (power + 2 + j)
    for k in range(n):
        share = 1.0 - (1 + k) / (power + 2 + k)
        for j in range(k + 1, n):
            share *= (1 + j) / (power + 2 + j)
        total += share * values[k]
    return total


@pytest.mark.parametrize("power", [0.0, 2.0, 8.0, 16.0])
def test_uncapped_ema_is_the_power_weighted_mean(power: float) -> None:
    values = [float(torch.sin(torch.tensor(0.3 * k))) for k in range(60)]
    assert _averaged(power, 0.9999, values) == pytest.approx(_power_mean(power, values), abs=1e-5)


def test_power_zero_is_the_running_mean_with_the_initial_weight_as_one_term() -> None:
    values = [float(v) for v in range(1, 41)]
    assert _averaged(0.0, 0.9999, values) == pytest.approx((sum(values) - 100.0) / (len(values) + 1), abs=1e-4)


def test_the_initial_weight_fades_as_a_power_of_the_step() -> None:
    # its share after n steps is prod (1 + j) / (power + 2 + j), about (power + 1)! / n**(power + 1)
    assert abs(_averaged(8.0, 0.9999, [0.0] * 100)) < 100 * 9 * 8 * 7 * 6 * 5 * 4 * 3 * 2 / 100 ** 9


def test_a_larger_power_reaches_back_fewer_steps() -> None:
    values = [float(k) for k in range(200)]  # a drifting weight: a shorter window sits nearer the last value
    means = [_averaged(p, 0.9999, values) for p in (2.0, 8.0, 16.0)]
    assert means[0] < means[1] < means[2] < values[-1]
    # weight ~ k**p over [0, n) has mean age about n / (p + 2)
    assert values[-1] - means[1] == pytest.approx(200 / 10, rel=0.1)


def test_default_power_is_the_classic_warm_up_and_the_decay_caps_it() -> None:
    for step in range(0, 12000, 7):
        assert ema_decay_at(step, 0.999, 8.0) == min(0.999, (1 + step) / (10 + step))
    assert ema_cap_step(0.999, 8.0) == pytest.approx(8990)
    assert ema_decay_at(9000, 0.999, 8.0) == 0.999 and ema_decay_at(8000, 0.999, 8.0) < 0.999


def test_window_note_names_an_inert_decay() -> None:
    note = ema_window_note(3038, 0.999, 8.0)
    assert note is not None and "8990" in note and "train.ema_power=8" in note and "304" in note
    assert ema_window_note(10000, 0.999, 8.0) is None


@pytest.mark.parametrize("bad", [-1.0, float("inf"), "eight"])
def test_config_rejects_a_bad_power(bad) -> None:
    with pytest.raises(ConfigError, match="train.ema_power"):
        TrainConfig(ema_power=bad)
