"""Stage 0 in a run folder: a kill mid-write leaves nothing half-written, a damaged file is named, and
another config's tokenizers are refused with the differing keys named."""

import pytest

from mdm.config import load_config
from mdm.nn.vq import VQVAE
from mdm.training import prepare
from mdm.training.run import train_run
from mdm.training.stage0_files import Stage0Error, check_settings

TINY = ["train.log_every=1", "train.batch_size=4", "data.train_size=48", "data.vq_steps=3",
        "data.codebook_size=32", "data.vocab_size=64", "train.steps=1"]
QUIET = dict(progress=False, log=lambda _: None)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_a_kill_while_the_vq_is_written_leaves_no_half_folder_and_the_next_run_trains(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    save = VQVAE.save

    def save_then_die(self, directory):
        save(self, directory)
        weights = directory / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])  # the file as a kill mid-write leaves it
        raise Killed

    monkeypatch.setattr(VQVAE, "save", save_then_die)
    with pytest.raises(Killed):
        train_run(load_config("tiny", TINY), folder, **QUIET)
    assert (folder / "tokenizer" / "tokenizer.model").is_file() and not (folder / "vq").exists()
    monkeypatch.setattr(VQVAE, "save", save)
    assert train_run(load_config("tiny", TINY), folder, **QUIET).trainer.step == 1
    assert not (folder / "vq.saving").exists()


def _stage0_only(config, folder):
    return prepare.prepare_data(config, folder, progress=False, log=lambda _: None)


def test_a_truncated_vq_file_is_named_in_the_error(tmp_path):
    folder = tmp_path / "run"
    _stage0_only(load_config("tiny", TINY), folder)
    weights = folder / "vq" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(Stage0Error, match=f"{weights} cannot be read.*delete {folder / 'vq'}"):
        train_run(load_config("tiny", TINY), folder, **QUIET)
    (folder / "tokenizer" / "tokenizer.model").write_bytes(b"")
    with pytest.raises(Stage0Error, match="tokenizer.model is missing or empty"):
        _stage0_only(load_config("tiny", TINY), folder)


def test_another_configs_stage0_is_refused_naming_the_keys_and_the_same_config_reuses_it(tmp_path):
    folder = tmp_path / "run"
    first = _stage0_only(load_config("tiny", TINY), folder)
    with pytest.raises(Stage0Error, match=r"data.codebook_size: 64 != 32.*delete"):
        train_run(load_config("tiny", TINY + ["data.codebook_size=64"]), folder, **QUIET)
    with pytest.raises(Stage0Error, match=r"data.seed: 3 != 0"):
        _stage0_only(load_config("tiny", TINY + ["data.seed=3"]), folder)
    again = _stage0_only(load_config("tiny", TINY + ["data.text_lens.caption=30"]), folder)  # not a stage-0 key
    assert again.tokenizer == first.tokenizer
    assert all((a == b).all() for a, b in zip(again.vq.state_dict().values(), first.vq.state_dict().values()))


def test_an_unrecorded_stage0_folder_is_refused_unless_its_checkpoint_vouches_for_it(tmp_path):
    folder = tmp_path / "run"
    train_run(load_config("tiny", TINY), folder, **QUIET)
    for name in ("tokenizer", "vq"):  # as an older MDM wrote them
        (folder / name / "stage0.json").unlink()
    assert train_run(load_config("tiny", TINY + ["train.steps=2"]), folder, resume=True, **QUIET).trainer.step == 2
    (folder / "checkpoint").rename(folder / "elsewhere")
    with pytest.raises(Stage0Error, match="does not record the settings"):
        train_run(load_config("tiny", TINY), folder, **QUIET)


def test_a_record_without_the_keys_added_since_reads_them_at_their_defaults(tmp_path):
    """A folder recorded before ``data.sources`` existed was made from one source: a single-source config reuses it,
    a mixture is refused naming the key."""
    import json

    folder = tmp_path / "run"
    _stage0_only(load_config("tiny", TINY), folder)
    for name in ("tokenizer", "vq"):
        record = folder / name / "stage0.json"
        settings = json.loads(record.read_text())["settings"]
        del settings["data.sources"], settings["data.memory_items"]
        record.write_text(json.dumps({"settings": settings}))
    assert _stage0_only(load_config("tiny", TINY), folder).tokenizer is not None
    mixture = TINY + ["data.name=mixture", "data.sources=[{kind: shapesworld}]"]
    with pytest.raises(Stage0Error, match=r"data.name: 'mixture' != 'shapesworld'; data.sources: \[\{'kind': "
                                          r"'shapesworld', 'weight': 1.0\}\] != \[\]"):
        check_settings(folder / "tokenizer", load_config("tiny", mixture))


def test_a_mixtures_stage0_records_its_sources(tmp_path, mixture_files):
    from mdm.training.mixture import prepare_mixture

    folder = tmp_path / "run"
    chat = f"{{kind: chat, path: {mixture_files['chat']}}}"
    config = load_config("tiny", TINY + ["data.name=mixture", f"data.sources=[{chat}]"])
    first = prepare_mixture(config, folder, **QUIET)
    assert prepare_mixture(config, folder, **QUIET).tokenizer == first.tokenizer  # reused
    other = tmp_path / "other.jsonl"
    other.write_text(mixture_files["chat"].read_text())
    moved = load_config("tiny", TINY + ["data.name=mixture", f"data.sources=[{{kind: chat, path: {other}}}]"])
    with pytest.raises(Stage0Error, match=r"data.sources: \[\{'kind': 'chat', 'weight': 1.0, 'path': '.*other.jsonl'"
                                          r"\}\] != \[\{'kind': 'chat', 'weight': 1.0, 'path': '.*chat.jsonl'\}\]"):
        prepare_mixture(moved, folder, **QUIET)
