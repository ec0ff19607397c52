"""README.md's config block shows the defaults that `Config()` really resolves, so it cannot drift from them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.augment.spec import describe
from pipeline.config import Config

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_config_block() -> dict:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Config\n") :]
    section = section[: section.index("\n## ", 1)]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1))


def test_every_value_shown_is_the_resolved_default() -> None:
    shown, defaults = readme_config_block(), Config().to_dict()
    assert list(shown) == list(defaults)  # every section, in the config's order
    for section, keys in shown.items():
        assert set(keys) <= set(defaults[section]), f"{section}: keys the config does not have"
        assert {key: defaults[section][key] for key in keys} == keys, section


def test_the_default_albumentations_pipeline_is_empty_as_shown() -> None:
    augment = readme_config_block()["augment"]
    assert augment["albumentations"] == [] and describe(Config().augment) == []
