"""Shared test setup: offline Hugging Face, a headless matplotlib, a fixed seed per test, and a broken PNG."""

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


def write_undecodable_png(path, colour=(0, 0, 255)) -> None:
    """A 16 px PNG whose chunk checksums are right but whose pixel data does not inflate: it passes
    PIL's verify() and fails only when decoded."""
    import struct
    import zlib

    from PIL import Image

    Image.new("RGB", (16, 16), colour).save(path)
    data = path.read_bytes()
    at = data.index(b"IDAT") - 4
    n = struct.unpack(">I", data[at:at + 4])[0]
    junk = bytes(range(7, 7 + n))
    path.write_bytes(data[:at] + struct.pack(">I", n) + b"IDAT" + junk + struct.pack(">I", zlib.crc32(b"IDAT" + junk))
                     + data[at + 12 + n:])


@pytest.fixture
def undecodable_png():
    """:func:`write_undecodable_png`, for tests of images that break only when decoded."""
    return write_undecodable_png


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A run folder of the ``tiny`` config trained for two steps on ShapesWorld (every task), for tests that only
    read it: trained once a session."""
    from mdm.config import load_config
    from mdm.training.run import train_run

    config = load_config("tiny", ["train.steps=2", "train.batch_size=4", "train.log_every=1", "data.train_size=48",
                                  "data.vq_steps=2", "data.codebook_size=32", "data.vocab_size=96"])
    out = tmp_path_factory.mktemp("tiny-checkpoint") / "run"
    train_run(config, out, progress=False, log=lambda _: None)
    return out
