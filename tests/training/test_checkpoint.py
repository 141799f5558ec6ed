"""Checkpoint folders: round trip, atomic saves, refusing pickles and mismatched configs."""

import json

import pytest
import torch

from mdm.config import load_config
from mdm.nn.layout import Modality
from mdm import checkpoint as ckpt_module
from mdm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mdm.training.loop import build_model

VOCAB = {Modality.TEXT: 40, Modality.IMAGE: 16}


@pytest.fixture
def model():
    config = load_config("tiny")
    network, _ = build_model(config, VOCAB)
    return config, network


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_round_trip(tmp_path, model):
    config, network = model
    ema = {k: v + 1 for k, v in network.state_dict().items()}
    save_checkpoint(tmp_path / "ck", config=config, network=network, ema_state=ema, text_lens={"caption": 7},
                    step=12)
    loaded = load_checkpoint(tmp_path / "ck", expect_config=config)
    assert loaded.step == 12 and loaded.text_lens == {"caption": 7} and loaded.config == config
    assert _equal(loaded.network.state_dict(), network.state_dict())
    assert _equal(loaded.ema_state, ema)
    assert loaded.tokenizer is None and loaded.vq is None and loaded.trainer is None


def test_a_save_killed_while_writing_leaves_the_previous_checkpoint(tmp_path, model, monkeypatch):
    config, network = model
    save_checkpoint(tmp_path / "ck", config=config, network=network, step=1)
    first = {k: v.clone() for k, v in network.state_dict().items()}
    with torch.no_grad():
        for p in network.parameters():
            p.add_(1.0)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies in the middle of writing the weights

    monkeypatch.setattr(ckpt_module, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ck", config=config, network=network, step=2)
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.step == 1 and _equal(loaded.network.state_dict(), first)


def test_a_kill_between_the_two_renames_falls_back_to_the_previous_folder(tmp_path, model):
    config, network = model
    save_checkpoint(tmp_path / "ck", config=config, network=network, step=5)
    (tmp_path / "ck").rename(tmp_path / "ck.previous")  # old moved aside, new not yet in place
    with pytest.warns(UserWarning, match="interrupted"):
        loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.step == 5


def test_pickles_are_refused_by_name(tmp_path, model):
    config, network = model
    save_checkpoint(tmp_path / "ck", config=config, network=network)
    torch.save(network.state_dict(), tmp_path / "ck" / "model.safetensors")  # a pickle under the right name
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(tmp_path / "ck")
    only_pickle = tmp_path / "old"
    only_pickle.mkdir()
    torch.save(network.state_dict(), only_pickle / "model.pt")
    with pytest.raises(CheckpointError, match=r"no config.json; found \['model.pt'\], which are pickles"):
        load_checkpoint(only_pickle)


def test_missing_weights_and_folders_are_named(tmp_path, model):
    config, network = model
    save_checkpoint(tmp_path / "ck", config=config, network=network)
    (tmp_path / "ck" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_a_config_that_does_not_match_is_refused(tmp_path, model):
    config, network = model
    save_checkpoint(tmp_path / "ck", config=config, network=network)
    other = load_config("tiny", ["backbone.n_layers=2", "vae.d_latent=8"])
    with pytest.raises(CheckpointError, match=r"backbone.n_layers: 2 != 4; .*vae.d_latent: 8 != 16"):
        load_checkpoint(tmp_path / "ck", expect_config=other)
    # training keys may differ (more steps, another lr): the weights still fit
    load_checkpoint(tmp_path / "ck", expect_config=load_config("tiny", ["train.steps=9"]))
    # a config.json edited so that the weights no longer fit names the tensors
    path = tmp_path / "ck" / "config.json"
    meta = json.loads(path.read_text())
    meta["config"]["backbone"]["d_model"] = 48
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match the config.json beside it"):
        load_checkpoint(tmp_path / "ck")


def test_a_foreign_config_json_is_refused(tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="not an MDM checkpoint config"):
        load_checkpoint(tmp_path / "ck")
