"""Shared test setup: offline Hugging Face, a headless matplotlib, and a fixed seed per test."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same RNG state, whatever ran before it."""
    torch.manual_seed(0)
    yield
