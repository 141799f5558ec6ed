"""data.tokenizer: checked at load, recorded by stage 0, reported in the run's log; a config or stage-0 folder
saved before the key existed was unigram, so old run folders resume and old checkpoints load as they were."""

import json

import pytest

from mdm.checkpoint import FORMAT, read_config
from mdm.config import ConfigError, MDMConfig, from_dict, load_config, to_dict
from mdm.config.files import from_saved_dict
from mdm.pipeline import MDMPipeline
from mdm.training import prepare
from mdm.training.run import resume_config, train_run
from mdm.training.stage0_files import Stage0Error

TINY = ["train.log_every=1", "train.batch_size=4", "data.train_size=48", "data.vq_steps=3",
        "data.codebook_size=32", "data.vocab_size=96", "train.steps=1"]
QUIET = dict(progress=False, log=lambda _: None)


def test_a_tokenizer_type_outside_the_choices_is_a_config_error_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.tokenizer must be one of auto, unigram, bpe, word, got 'wordpiece'"):
        load_config("tiny", ["data.tokenizer=wordpiece"])
    user = tmp_path / "mine.yaml"
    user.write_text("data:\n  tokenizer: sentencepiece\n")
    with pytest.raises(ConfigError, match=rf"{user}: data\.tokenizer must be one of .* got 'sentencepiece'"):
        load_config(user)


def test_a_config_saved_before_the_key_was_unigram_and_a_users_file_takes_the_default(tmp_path):
    assert MDMConfig().data.tokenizer == "unigram" and load_config("shapesworld").data.tokenizer == "unigram"
    old = to_dict(load_config("tiny"))
    del old["data"]["tokenizer"]
    assert from_saved_dict(old).data.tokenizer == "unigram"
    assert from_dict(MDMConfig, old).data.tokenizer == "unigram"  # a YAML file names only what it changes
    assert from_saved_dict(to_dict(load_config("tiny", ["data.tokenizer=bpe"]))).data.tokenizer == "bpe"
    (tmp_path / "ck").mkdir()  # a checkpoint's config.json from before the key
    meta = {"format": FORMAT, "step": 0, "config": old, "vocab_sizes": {}, "text_lens": {}}
    (tmp_path / "ck" / "config.json").write_text(json.dumps(meta))
    assert read_config(tmp_path / "ck")[0].data.tokenizer == "unigram"


def test_stage0_trains_the_configured_type_and_logs_how_it_fits(tmp_path):
    said = []
    auto = TINY + ["data.tokenizer=auto"]
    data = prepare.prepare_data(load_config("tiny", auto), tmp_path / "run", progress=False, log=said.append)
    assert data.tokenizer.model_type == "word"
    line = next(s for s in said if s.startswith("text tokenizer: trained SentencePiece word"))
    assert "distinct words whole" in line
    record = json.loads((tmp_path / "run" / "tokenizer" / "stage0.json").read_text())["settings"]
    assert record["data.tokenizer"] == "auto"  # the setting; the model it chose is a word model
    said.clear()
    prepare.prepare_data(load_config("tiny", auto), tmp_path / "run", progress=False, log=said.append)
    assert any("loaded" in s and "SentencePiece word" in s for s in said)
    with pytest.raises(Stage0Error, match=r"data\.tokenizer: 'unigram' != 'auto'"):
        prepare.prepare_data(load_config("tiny", TINY + ["data.tokenizer=unigram"]), tmp_path / "run", **QUIET)


def test_stage0_warns_in_one_log_line_when_unigram_splits_a_small_worlds_words():
    said = []
    config = load_config("digits", ["data.tokenizer=unigram", "data.vq_steps=1", "train.batch_size=4"])
    corpus = [t.text for s in prepare.load_samples(config) for t in s.texts]
    prepare._train_tokenizer(corpus, config, None, log=said.append)
    warning = [s for s in said if s.startswith("warning:")]
    assert len(warning) == 1 and "data.tokenizer=unigram, data.vocab_size=64" in warning[0]
    assert "too few distinct words" in warning[0] and "data.tokenizer=word" in warning[0]


def _as_written_before_the_key(folder):
    """Remove data.tokenizer from every record of a run folder, as an MDM without the key wrote them."""
    path = folder / "checkpoint" / "config.json"
    meta = json.loads(path.read_text())
    del meta["config"]["data"]["tokenizer"]
    path.write_text(json.dumps(meta))
    for name in ("tokenizer", "vq"):
        path = folder / name / "stage0.json"
        record = json.loads(path.read_text())
        del record["settings"]["data.tokenizer"]
        path.write_text(json.dumps(record))


def test_an_old_run_folder_resumes_with_its_unigram_tokenizer_and_its_checkpoint_samples(tmp_path):
    folder = tmp_path / "old"
    first = train_run(load_config("tiny", TINY + ["data.tokenizer=unigram"]), folder, **QUIET)
    _as_written_before_the_key(folder)
    config = resume_config(folder, ["train.steps=2"])
    assert config.data.tokenizer == "unigram"
    again = train_run(config, folder, resume=True, **QUIET)
    assert again.trainer.step == 2 and again.data.tokenizer == first.data.tokenizer
    assert MDMPipeline.from_pretrained(folder).config.data.tokenizer == "unigram"
    with pytest.raises(ValueError, match=r"data\.tokenizer: 'auto' != 'unigram'"):  # another type is another run
        train_run(load_config("tiny", TINY + ["train.steps=3", "data.tokenizer=auto"]), folder, resume=True, **QUIET)
