"""Configs (mdm.config): presets, YAML files, overrides, and errors that name what is wrong."""

import dataclasses
import re

import pytest
import torch

from mdm.config import (PRESETS, BackboneConfig, BackboneKind, ConfigError, LayoutConfig, MDMConfig, apply_overrides,
                        from_dict, load_config, save_config, to_dict)
from mdm.nn.ssd import Discretization

BACKBONE_KEYS = sorted(f.name for f in dataclasses.fields(BackboneConfig))


def write(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- presets

@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_loads(preset):
    config = load_config(preset)
    assert isinstance(config, MDMConfig)
    assert config.name == preset
    assert isinstance(config.backbone.kind, BackboneKind)
    assert isinstance(config.backbone.discretization, Discretization)
    assert config.backbone.d_model % config.backbone.head_dim == 0


def test_tiny_preset_values():
    config = load_config("tiny")
    assert (config.backbone.d_model, config.backbone.n_layers, config.backbone.scan_patterns) == (32, 4, "1234/12")
    assert config.layout.image_grid == (4, 4)


@pytest.mark.parametrize("preset", PRESETS)
def test_to_dict_from_dict_round_trip(preset):
    config = load_config(preset)
    data = to_dict(config)
    assert data["backbone"]["kind"] == config.backbone.kind.value  # plain values, not enums
    assert from_dict(MDMConfig, data) == config


@pytest.mark.parametrize("preset", PRESETS)
def test_save_load_round_trip(tmp_path, preset):
    config = load_config(preset)
    path = tmp_path / f"{preset}.yaml"
    save_config(config, path)
    assert load_config(path) == config
    assert load_config(str(path)) == config


# --------------------------------------------------------------------------- overrides

def test_overrides():
    config = load_config("tiny", ["backbone.d_model=64", "backbone.kind=transformer", "name=mine",
                                  "backbone.mlp_ratio=2", "layout.text_len=9"])
    assert config.backbone.d_model == 64
    assert config.backbone.kind is BackboneKind.TRANSFORMER
    assert config.name == "mine"
    assert config.backbone.mlp_ratio == 2.0 and isinstance(config.backbone.mlp_ratio, float)
    assert config.layout.text_len == 9
    assert load_config("tiny").backbone.d_model == 32  # the preset is untouched


def test_apply_overrides_returns_a_copy():
    config = load_config("tiny")
    changed = apply_overrides(config, ["backbone.n_layers=2"])
    assert changed.backbone.n_layers == 2 and config.backbone.n_layers == 4


def test_override_without_equals_raises():
    with pytest.raises(ConfigError, match=r"override 'backbone.d_model' must look like section.key=value"):
        load_config("tiny", ["backbone.d_model"])


def test_override_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'backbone.width'; valid keys here: .*d_model"):
        load_config("tiny", ["backbone.width=3"])
    with pytest.raises(ConfigError, match=r"'decoder' is not a config section; sections: backbone, layout"):
        load_config("tiny", ["decoder.width=3"])


def test_override_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"backbone.n_layers must be int, got 'abc'"):
        load_config("tiny", ["backbone.n_layers=abc"])


@pytest.mark.parametrize("overrides,message", [
    (["train.lr_final_fraction=1.5"], r"train.lr_final_fraction is a fraction of train.lr in \[0, 1\], got 1.5"),
    (["data.question_kinds=color"], r"data.question_kinds must be a list such as \[color, count\], got 'color'"),
    (["data.name=digits", "data.question_kinds=[color]"], r"data.question_kinds applies to data.name shapesworld, "
                                                          r"not 'digits'"),
])
def test_range_and_list_fields_name_what_is_expected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides)


def test_clean_frames_on_pixel_patches_is_refused():
    with pytest.raises(ConfigError, match=r"diffusion.clean_frames_prob needs VQ-coded clips"):
        load_config("tiny", ["layout.image_tokens=pixels", "diffusion.clean_frames_prob=0.5"])
    with pytest.raises(ConfigError, match=r"line: train.curriculum_clean_frames_prob needs VQ-coded clips"):
        load_config("tiny", ["layout.image_tokens=pixels", "train.curriculum_clean_frames_prob=0.5"])


@pytest.mark.parametrize("key,value,message", [
    ("train.distributed", "zero3", r"train.distributed must be ddp or fsdp, got 'zero3'"),
    ("train.mixed_precision", "fp8", r"train.mixed_precision must be auto, bf16 or no, got 'fp8'"),
    ("diffusion.clean_frames", "suffix", r"diffusion.clean_frames must be random or prefix, got 'suffix'"),
    ("train.lr_decay", "step", r"train.lr_decay must be one of constant, linear, cosine, got 'step'"),
    ("data.question_kinds", "[colour]", r"data.question_kinds must be distinct kinds of color, shape, size, "
                                        r"count, position, got \['colour'\]"),
])
def test_choice_fields_name_the_valid_values(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [f"{key}={value}"])


# --------------------------------------------------------------------------- ShapesWorld levels (DESIGN.md §6)

@pytest.mark.parametrize("level", ["easy", "medium", "hard"])
def test_data_level_round_trips_through_a_saved_config_and_a_checkpoint(tmp_path, level):
    import json

    from mdm.checkpoint import FORMAT, read_config

    config = load_config("shapesworld", [f"data.level={level}"])
    assert config.data.level == level
    save_config(config, tmp_path / "run.yaml")
    assert "level: " + level in (tmp_path / "run.yaml").read_text()
    assert load_config(tmp_path / "run.yaml") == config
    (tmp_path / "checkpoint").mkdir()  # the config.json a checkpoint writes (mdm.checkpoint)
    meta = {"format": FORMAT, "step": 0, "config": to_dict(config), "vocab_sizes": {}, "text_lens": {}}
    (tmp_path / "checkpoint" / "config.json").write_text(json.dumps(meta, indent=2))
    assert read_config(tmp_path / "checkpoint")[0].data.level == level


def test_data_level_defaults_to_hard_also_for_a_config_saved_before_levels():
    assert MDMConfig().data.level == "hard" and load_config("shapesworld").data.level == "hard"
    data = to_dict(load_config("shapesworld"))
    del data["data"]["level"]
    assert from_dict(MDMConfig, data).data.level == "hard"
    with pytest.raises(ConfigError, match=r"data.level must be one of easy, medium, hard"):
        from_dict(MDMConfig, {"data": {"level": "impossible"}})


@pytest.mark.parametrize("overrides,message", [
    (["data.level=expert"], r"data.level must be one of easy, medium, hard, got 'expert'"),
    (["data.level=Easy"], r"data.level must be one of easy, medium, hard, got 'Easy'"),
    (["data.level=easy", "data.question_kinds=[color, size]"],
     r"data.question_kinds \['color', 'size'\] asks for kinds that data.level easy does not have; "
     r"its kinds: color, shape, count, position"),
    (["data.name=digits", "data.level=medium"], r"data.level medium applies to data.name shapesworld, not 'digits'"),
])
def test_data_level_errors_name_the_valid_levels_and_the_contradicting_keys(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("shapesworld", overrides)


def test_data_level_accepts_the_question_kinds_it_has():
    config = load_config("shapesworld", ["data.level=easy", "data.question_kinds=[count, position]"])
    assert (config.data.level, config.data.question_kinds) == ("easy", ["count", "position"])
    assert load_config("shapesworld", ["data.level=medium", "data.question_kinds=[size]"]).data.level == "medium"


def test_compiled_blocks_under_fsdp_are_refused():
    with pytest.raises(ConfigError, match=r"train.compile is not supported with train.distributed=fsdp \(sharded"):
        load_config("tiny", ["train.compile=true", "train.distributed=fsdp"])


# --------------------------------------------------------------------------- YAML files and their errors

def test_user_file_loads(tmp_path):
    path = write(tmp_path, "name: mine\nbackbone:\n  d_model: 64\n  kind: transformer\n")
    config = load_config(path)
    assert config.name == "mine" and config.backbone.d_model == 64
    assert config.backbone.kind is BackboneKind.TRANSFORMER
    assert config.backbone.n_layers == BackboneConfig().n_layers  # unspecified keys keep defaults


def test_unknown_key_names_file_key_and_valid_keys(tmp_path):
    path = write(tmp_path, "backbone:\n  d_model: 64\n  n_layer: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "backbone.n_layer" in message
    assert "valid keys in backbone: " + ", ".join(BACKBONE_KEYS) in message


def test_unknown_top_level_section(tmp_path):
    path = write(tmp_path, "training:\n  lr: 1\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: unknown key\(s\) training; "
                                          r"valid keys in the top level: backbone, data, diffusion, layout, name, train, vae"):
        load_config(path)


def test_wrong_type_names_the_key(tmp_path):
    path = write(tmp_path, "backbone:\n  n_layers: abc\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: backbone.n_layers must be int, got 'abc'"):
        load_config(path)
    path = write(tmp_path, "backbone:\n  long_skips: 3\n", "b.yaml")
    with pytest.raises(ConfigError, match=r"backbone.long_skips must be bool"):
        load_config(path)
    path = write(tmp_path, "backbone:\n  n_layers: true\n", "c.yaml")  # bool is not an int here
    with pytest.raises(ConfigError, match=r"backbone.n_layers must be int"):
        load_config(path)


def test_section_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "backbone: 3\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: backbone.* must be a mapping, got int"):
        load_config(path)
    path = write(tmp_path, "- 1\n- 2\n", "list.yaml")
    with pytest.raises(ConfigError, match=r"the top level must be a mapping, got list"):
        load_config(path)


def test_section_error_names_the_key_cleanly():
    with pytest.raises(ConfigError, match=r"^f.yaml: backbone must be a mapping, got int$"):
        from_dict(MDMConfig, {"backbone": 3}, "f.yaml")


def test_bad_enum_lists_valid_values(tmp_path):
    path = write(tmp_path, "backbone:\n  kind: rnn\n")
    with pytest.raises(ConfigError, match=r"backbone.kind: 'rnn' is not one of \['mamba2', 'bimamba2', 'transformer'\]"):
        load_config(path)
    path = write(tmp_path, "backbone:\n  discretization: rk4\n", "d.yaml")
    with pytest.raises(ConfigError, match=r"backbone.discretization: 'rk4' is not one of \['zoh', 'euler'\]"):
        load_config(path)


def test_bad_scan_pattern_raises(tmp_path):
    path = write(tmp_path, "backbone:\n  scan_patterns: 5/1\n")
    with pytest.raises(ConfigError, match=r"backbone.scan_patterns: unknown scan pattern set '5/1'"):
        load_config(path)
    with pytest.raises(ConfigError, match="backbone.scan_patterns"):
        load_config("tiny", ["backbone.scan_patterns=11/1"])


def test_inconsistent_sizes_raise():
    with pytest.raises(ConfigError, match="head_dim 24"):
        load_config("tiny", ["backbone.head_dim=24"])
    with pytest.raises(ConfigError, match="backbone.n_layers must be >= 1"):
        load_config("tiny", ["backbone.n_layers=0"])
    with pytest.raises(ConfigError, match="layout.image_size 18 must be a multiple"):
        load_config("tiny", ["layout.image_size=18"])


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"config file {re.escape(str(path))} does not exist"):
        load_config(path)


def test_unknown_name_lists_presets():
    with pytest.raises(ConfigError, match=r"unknown config 'huge'.*tiny, quickstart, small, base, paper-7b"):
        load_config("huge")


def test_malformed_yaml_raises(tmp_path):
    path = write(tmp_path, "backbone:\n  d_model: [64\n  n_layers: 2\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: not valid YAML"):
        load_config(path)


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == MDMConfig()


def test_dataclass_defaults_are_valid():
    assert BackboneConfig() == from_dict(BackboneConfig, {})
    assert LayoutConfig().image_grid == (8, 8)


# --------------------------------------------------------------------------- the paper's size

def test_paper_7b_builds_on_meta_device():
    from mdm.nn.backbone import Backbone

    config = load_config("paper-7b").backbone
    assert (config.d_model, config.n_layers) == (2048, 49)
    with torch.device("meta"):
        backbone = Backbone(config)
    params = list(backbone.parameters())
    assert all(p.is_meta for p in params)  # nothing allocated
    assert all(b.is_meta for b in backbone.buffers())
    n_params = sum(p.numel() for p in params)
    assert n_params > 1e9
    assert len(backbone.blocks) == 49 and len(backbone.skip_proj) == 24


def test_float_in_exponent_notation_without_dot():
    """YAML 1.1 reads `1e-3` as a string; a float field still takes it."""
    assert load_config("tiny", ["train.lr=1e-3"]).train.lr == 1e-3
    with pytest.raises(ConfigError, match="train.lr must be float"):
        load_config("tiny", ["train.lr=fast"])


def test_exponent_floats_inside_dict_fields_and_files(tmp_path):
    config = load_config("tiny", ["train.task_weights={joint: 1e-3, vqa: 2}"])
    assert config.train.task_weights == {"joint": 1e-3, "vqa": 2}
    path = write(tmp_path, "train:\n  lr: 3e-4\n")
    assert load_config(path).train.lr == 3e-4


def test_class_modulation_needs_classes():
    with pytest.raises(ConfigError, match="backbone.class_modulation needs class labels"):
        load_config("shapesworld", ["backbone.class_modulation=true"])  # n_classes 0
    assert load_config("digits", ["backbone.class_modulation=true"]).backbone.class_modulation


# --------------------------------------------------------------------------- names the config shares with modules

def test_the_config_names_what_the_modules_implement():
    from mdm.config import (DISTRIBUTED_STRATEGIES, IMAGE_SCAN_PATTERNS, SHAPESWORLD_LEVEL_KINDS,
                            SHAPESWORLD_QUESTION_KINDS, TEXT_SCAN_PATTERNS, Discretization as ConfigDiscretization)
    from mdm.data.shapesworld import QUESTION_KINDS
    from mdm.data.shapesworld_levels import LEVELS
    from mdm.nn.scan import IMAGE_PATTERNS, TEXT_PATTERNS
    from mdm.training.distributed import STRATEGIES

    assert ConfigDiscretization is Discretization
    assert (tuple(IMAGE_PATTERNS), tuple(TEXT_PATTERNS)) == (IMAGE_SCAN_PATTERNS, TEXT_SCAN_PATTERNS)
    assert DISTRIBUTED_STRATEGIES == STRATEGIES
    assert SHAPESWORLD_QUESTION_KINDS == QUESTION_KINDS
    assert SHAPESWORLD_LEVEL_KINDS == {name: tuple(level.get("question_kinds", QUESTION_KINDS))
                                       for name, level in LEVELS.items()}


def test_schedule_and_task_names_are_checked_where_they_are_used():
    from mdm.diffusion.multimodal import MultimodalDiffusion
    from mdm.training.loop import task_sampler

    bad = load_config("tiny", ["diffusion.image_schedule=cosine"])  # diffusers' name is squaredcos_cap_v2
    with pytest.raises(ConfigError, match=r"diffusion.image_schedule: 'cosine' is not one of \['linear', "
                                          r"'squaredcos_cap_v2', 'scaled_linear'\]"):
        MultimodalDiffusion(bad.diffusion, bad.vae)
    bad = load_config("tiny", ["train.task_weights={captioning: 1.0}"])
    with pytest.raises(ConfigError, match=r"train.task_weights: 'captioning' is not one of \['class_to_image', "):
        task_sampler(None, bad.train.task_weights, torch.Generator())


@pytest.mark.parametrize("override,key", [("diffusion.text_schedule=cosine", "diffusion.text_schedule"),
                                          ("train.task_weights={captioning: 1.0}", "train.task_weights"),
                                          ("train.curriculum_task_weights={captioning: 1.0}",
                                           "train.curriculum_task_weights")])
def test_mdm_train_refuses_a_bad_name_before_stage_0(tmp_path, capsys, override, key):
    from mdm.cli import main

    assert main(["train", "--config", "tiny", "--out", str(tmp_path / "run"), override]) == 2
    assert f"config error: {key}: " in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("override, key", [("train.lr=.nan", "train.lr"), ("train.lr=.inf", "train.lr"),
                                           ("train.grad_clip=-.inf", "train.grad_clip"),
                                           ("train.task_weights.vqa=.nan", "train.task_weights.vqa"),
                                           ("train.weight_decay=.nan", "train.weight_decay")])
def test_a_number_that_is_not_finite_is_refused_at_load(override, key):
    with pytest.raises(ConfigError, match=re.escape(key) + " must be a finite number"):
        load_config("tiny", [override])
    with pytest.raises(ConfigError, match="train.lr must be a finite number > 0, got 0"):
        load_config("tiny", ["train.lr=0"])
