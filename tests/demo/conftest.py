"""A tiny ShapesWorld run for the demo's tests: two training steps, every task but class->image recorded."""

import pytest

TINY_RUN = ["train.steps=2", "train.batch_size=4", "data.train_size=48", "data.vq_steps=2", "data.codebook_size=32",
            "data.vocab_size=64"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """A run folder trained on the ``tiny`` preset (its model draws noise; what matters here is the page)."""
    from mdm.config import load_config
    from mdm.training.run import train_run

    out = tmp_path_factory.mktemp("demo") / "run"
    train_run(load_config("tiny", TINY_RUN), out, progress=False, log=lambda _: None)
    return out
