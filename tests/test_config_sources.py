"""``data.sources``: a mixture's sources are checked at config load, each error naming the source by its index and
field, and a config without them is the single-source config it always was."""

import json

import pytest

from mdm.config import PRESETS, ConfigError, MDMConfig, from_dict, load_config, save_config, to_dict

MIXTURE = """
name: mix
data:
  name: mixture
  sources:
    - {kind: coco, path: caps.json, images: imgs/, weight: 2}
    - {kind: vqav2, path: q.json, annotations: a.json, images: imgs/, weight: 1}
    - {kind: chat, path: chat.jsonl}
"""


def test_every_preset_is_a_single_source_config():
    for name in PRESETS:
        data = load_config(name).data
        assert data.sources == [] and data.name != "mixture" and data.kinds == (data.name,), name


def test_a_mixture_loads_with_its_weights_completed_and_survives_yaml_and_json(tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text(MIXTURE)
    config = load_config(path)
    assert config.data.sources == [
        {"kind": "coco", "weight": 2.0, "path": "caps.json", "images": "imgs/"},
        {"kind": "vqav2", "weight": 1.0, "path": "q.json", "annotations": "a.json", "images": "imgs/"},
        {"kind": "chat", "weight": 1.0, "path": "chat.jsonl"},  # no weight: 1
    ]
    assert config.data.kinds == ("coco", "vqav2", "chat")
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config
    assert from_dict(MDMConfig, json.loads(json.dumps(to_dict(config)))) == config  # a checkpoint's config.json


def test_a_config_without_sources_reads_as_before():
    """A checkpoint's config written before data.sources existed loads as the single source it was."""
    data = to_dict(load_config("tiny"))
    del data["data"]["sources"], data["data"]["memory_items"]
    assert from_dict(MDMConfig, data) == load_config("tiny")


@pytest.mark.parametrize("overrides,message", [
    (["data.sources=[{kind: foo}]"], r"data\.sources\[0\]\.kind: expected one of shapesworld, digits, imagefolder, "
                                     r"coco, captionfolder, vqav2, chat; got 'foo'"),
    (["data.sources=[{kind: chat, path: c.jsonl}, {path: x}]"], r"data\.sources\[1\]\.kind: expected .*; got None"),
    (["data.sources=[chat]"], r"data\.sources\[0\]: expected a mapping such as \{kind: chat, path: chat\.jsonl\}"),
    (["data.sources=chat.jsonl"], r"data\.sources must be a list of sources"),
    (["data.sources=[{kind: vqav2, path: q.json, images: i}]"],
     r"data\.sources\[0\]\.annotations: vqav2 sources read their annotations JSON file from this key; got None"),
    (["data.sources=[{kind: imagefolder, path: ''}]"], r"data\.sources\[0\]\.path: imagefolder sources read their "
                                                       r"class folder"),
    (["data.sources=[{kind: digits, size: 3}]"], r"data\.sources\[0\]\.size: not a key of digits sources, which "
                                                 r"take kind, weight$"),
    (["data.sources=[{kind: digits, weight: true}]"], r"data\.sources\[0\]\.weight: expected a finite number >= 0; "
                                                      r"got True"),
    (["data.sources=[{kind: digits, weight: .inf}]"], r"data\.sources\[0\]\.weight: expected a finite number"),
    (["data.sources=[{kind: digits, weight: -0.5}, {kind: shapesworld}]"], r"data\.sources\[0\]\.weight: "),
    (["data.sources=[{kind: digits, weight: 0}, {kind: shapesworld, weight: 0.0}]"],
     r"data\.sources: every weight is 0 \(\[0\.0, 0\.0\]\); give a source a weight > 0"),
])
def test_a_bad_source_is_named_by_its_index_and_field(overrides, message):
    with pytest.raises(ConfigError, match=r"^command line: " + message):
        load_config("tiny", ["data.name=mixture", *overrides])


def test_sources_and_data_name_mixture_go_together():
    with pytest.raises(ConfigError, match=r"data\.sources is read by data\.name mixture, but data\.name is "
                                          r"'shapesworld': set data\.name=mixture"):
        load_config("tiny", ["data.sources=[{kind: digits}]"])
    with pytest.raises(ConfigError, match=r"data\.name mixture reads data\.sources: give at least one source"):
        load_config("tiny", ["data.name=mixture"])
    with pytest.raises(ConfigError, match=r"data\.images names the files of one source; data\.name mixture reads "
                                          r"each source's own \(data\.sources\[i\]\.images\)"):
        load_config("tiny", ["data.name=mixture", "data.sources=[{kind: digits}]", "data.images=imgs"])
    with pytest.raises(ConfigError, match=r"layout\.frames must be 1, got 8"):
        load_config("tiny", ["data.name=mixture", "data.sources=[{kind: digits}]", "layout.frames=8"])
    with pytest.raises(ConfigError, match=r"data\.memory_items must be >= 32 \(a stage-0 VQ-VAE batch"):
        load_config("tiny", ["data.memory_items=31"])


def test_shapesworld_settings_apply_to_a_shapesworld_source_only():
    config = load_config("tiny", ["data.name=mixture", "data.sources=[{kind: shapesworld}, {kind: digits}]",
                                  "data.level=easy", "data.question_kinds=[color]"])
    assert config.data.kinds == ("shapesworld", "digits") and config.data.level == "easy"
    with pytest.raises(ConfigError, match=r"data\.level easy applies to data\.name shapesworld"):
        load_config("tiny", ["data.name=mixture", "data.sources=[{kind: digits}]", "data.level=easy"])
