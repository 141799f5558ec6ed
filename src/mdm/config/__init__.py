"""Dataclass configs, the shipped presets, and YAML / command-line overrides.

A config is plain data: library functions take these dataclasses, never a dict
or a Hydra tree. ``load_config("tiny")`` reads a shipped preset
(``src/mdm/configs/*.yaml``); ``load_config("path/to/file.yaml")`` a user's file.
Overrides are ``section.key=value`` strings parsed as YAML scalars. Unknown or
mistyped keys are errors that name the file, the key and the valid keys.

The bottom floor of the package: it imports nothing from :mod:`mdm` outside it.

* :mod:`mdm.config.sections` -- the dataclasses and their checks (:mod:`mdm.config.data` and
  :mod:`mdm.config.train` hold the data and training sections, :mod:`mdm.config.errors` the error);
* :mod:`mdm.config.files` -- YAML, presets and overrides;
* :mod:`mdm.config.choices` -- the names other modules own (scan patterns, levels, ...), as plain data.
"""

from mdm.config.choices import (ABSORBING_LOSSES, DISTRIBUTED_STRATEGIES, IMAGE_SCAN_PATTERNS, MASKING_PROCESSES,
                                PROCESS_NAMES, SHAPESWORLD_LEVEL_KINDS, SHAPESWORLD_QUESTION_KINDS,
                                TEXT_SCAN_PATTERNS, Discretization, parse_pattern_set)
from mdm.config.files import PRESETS, apply_overrides, from_dict, load_config, save_config, to_dict
from mdm.config.sections import (BackboneConfig, BackboneKind, ConfigError, DataConfig, DiffusionConfig, ImageTokens,
                                 LayoutConfig, MDMConfig, VAEConfig)
from mdm.config.train import LR_DECAYS, TrainConfig

__all__ = ["ABSORBING_LOSSES", "DISTRIBUTED_STRATEGIES", "IMAGE_SCAN_PATTERNS", "LR_DECAYS", "MASKING_PROCESSES",
           "PRESETS", "PROCESS_NAMES", "SHAPESWORLD_LEVEL_KINDS", "SHAPESWORLD_QUESTION_KINDS", "TEXT_SCAN_PATTERNS",
           "BackboneConfig", "BackboneKind", "ConfigError", "DataConfig", "DiffusionConfig", "Discretization",
           "ImageTokens", "LayoutConfig", "MDMConfig", "TrainConfig", "VAEConfig", "apply_overrides", "from_dict",
           "load_config", "parse_pattern_set", "save_config", "to_dict"]
