"""pipeline/starter_config.py: the file `init` writes shows every key with a comment and loads to the defaults."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from pipeline.config import Config, ConfigError, load_config, warn_ineffective_settings
from pipeline.starter_config import LEFT_UNSET, _hint, starter_config, write_starter_config


def test_the_starter_loads_to_exactly_the_defaults(tmp_path: Path) -> None:
    path = write_starter_config(tmp_path / "experiment.yaml")
    assert load_config(path) == Config() and load_config(path).to_dict() == Config().to_dict()


def test_every_section_and_key_is_shown_once_in_order_with_a_comment() -> None:
    shown, section = [], ""
    for line in starter_config().splitlines():
        if not line.startswith(("#", " ")):
            section = line.split(":")[0]
        elif line.startswith("  "):
            key_value, _, comment = line.removeprefix("  ").removeprefix("# ").partition("  # ")
            assert comment.strip(), line
            shown.append((section, key_value.split(":")[0]))
    assert shown == [
        (name, key) for name, field in Config.model_fields.items() for key in field.annotation.model_fields
    ]


def test_comments_are_the_descriptions_or_what_the_type_admits() -> None:
    text = starter_config()
    assert "  imgsz: 640                    # training image size in pixels (a multiple of 32)\n" in text
    assert "  epochs: 10                    # passes over the training images\n" in text
    assert "(auto, SGD, Adam, AdamW, NAdam, RAdam, RMSProp or MuSGD)\n" in text  # a description and the choices

    # A field without a description says what it admits.
    class Undescribed(BaseModel):
        count: int = Field(1, gt=0)
        share: float = Field(1.0, ge=0, le=1)
        switch: bool = True

    hints = {name: _hint(field) for name, field in Undescribed.model_fields.items()}
    assert hints == {"count": "an integer > 0", "share": "a number from 0 to 1", "switch": "true or false"}
    assert "  uri: ''   " in text and "  freeze: null   " in text and "  reductions: [mean, max, last]  #" in text


def test_keys_whose_presence_matters_are_commented_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert {("train", "workers"), ("augment", "symmetry"), ("augment", "degrees")} <= set(LEFT_UNSET)
    path = write_starter_config(tmp_path / "experiment.yaml")
    with caplog.at_level(logging.WARNING, logger="pipeline.config"):
        warn_ineffective_settings(load_config(path), "cpu")
    assert caplog.messages == []  # a starter config on a CPU: no "train.workers does nothing" line
    # Choosing a preset in the starter file gets the preset's settings, as the override does on the defaults.
    path.write_text(path.read_text().replace("  preset: none ", "  preset: surface "))
    assert load_config(path) == load_config(None, ["augment.preset=surface"])
    assert load_config(path).augment.symmetry == 1.0


def test_an_existing_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text("train: {epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"experiment.yaml: already exists; init writes only a new file"):
        write_starter_config(path)
    assert path.read_text() == "train: {epochs: 3}\n"
