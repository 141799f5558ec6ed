"""Every config field is read by the code, and a removed field still loads from an old checkpoint's config."""

import dataclasses
import re
from pathlib import Path

import pytest

import mdm
from mdm.config import ConfigError, DiffusionConfig, MDMConfig, from_dict, to_dict
from mdm.config.sections import REMOVED_FIELDS

PACKAGE = Path(mdm.__file__).parent
SECTIONS = [type(value) for value in vars(MDMConfig()).values() if dataclasses.is_dataclass(value)]


def code_outside_config() -> str:
    """The source of every module of the package but mdm.config, where the fields are declared and checked."""
    return "\n".join(p.read_text() for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] != "config")


def test_the_sections_are_found():
    assert {s.__name__ for s in SECTIONS} == {"BackboneConfig", "LayoutConfig", "VAEConfig", "DiffusionConfig",
                                              "TrainConfig", "DataConfig"}


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_every_field_is_read_outside_the_config_package(section):
    code = code_outside_config()
    unread = [f.name for f in dataclasses.fields(section) if not re.search(r"\.%s\b" % f.name, code)]
    assert not unread, f"{section.__name__} fields never read as an attribute outside mdm.config: {unread}"


def test_a_removed_field_at_the_value_that_behaves_as_now_loads_and_is_ignored():
    data = to_dict(MDMConfig())
    for cls, removed in REMOVED_FIELDS.items():
        section = next(name for name, value in vars(MDMConfig()).items() if isinstance(value, cls))
        data[section].update(removed)
    assert from_dict(MDMConfig, data) == MDMConfig()


def test_a_removed_field_at_another_value_is_an_error_that_names_it():
    data = to_dict(MDMConfig())
    data["diffusion"]["image_snr_shift"] = 64.0
    with pytest.raises(ConfigError, match=r"diffusion\.image_snr_shift was removed"):
        from_dict(MDMConfig, data)


def test_removed_fields_are_gone_from_their_sections():
    for cls, removed in REMOVED_FIELDS.items():
        assert not set(removed) & {f.name for f in dataclasses.fields(cls)}
    assert "image_snr_shift" in REMOVED_FIELDS[DiffusionConfig]
