"""pipeline/config.py: defaults, YAML loading, overrides and one-line error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import (
    AugmentConfig,
    Config,
    ConfigError,
    DataConfig,
    GradientsConfig,
    ModelConfig,
    TrackingConfig,
    TrainConfig,
    build_config,
    load_config,
    parse_override,
    save_config,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: str | Path | None, overrides: list[str] | None = None) -> str:
    """The message of the ConfigError that loading raises; it must be exactly one line."""
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- loading ------------------------------------------------------------------------------------


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.train.epochs == 10
    assert config.train.imgsz == 640
    assert config.train.device == "auto"
    assert config.model.weights == "yolo11n.yaml"
    assert config.model.freeze is None
    assert config.tracking.enabled is True
    assert config.data.path == ""


def test_minimal_file_fills_the_rest_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "data:\n  path: datasets/a\ntrain:\n  epochs: 3\n  imgsz: 320\n")
    config = load_config(path)
    assert config.data.path == "datasets/a"
    assert config.train.epochs == 3
    assert config.train.imgsz == 320
    # everything not in the file is a default
    assert config.train.batch == TrainConfig().batch
    assert config.data.name == DataConfig().name
    assert config.model == ModelConfig()
    assert config.augment == AugmentConfig()
    assert config.tracking == TrackingConfig()


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "empty.yaml", "")) == Config()


def test_repo_demo_config_loads() -> None:
    demo = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    assert isinstance(load_config(demo), Config)


# ---- overrides ----------------------------------------------------------------------------------


def test_override_int_keeps_its_type() -> None:
    config = load_config(None, ["train.epochs=5"])
    assert config.train.epochs == 5
    assert type(config.train.epochs) is int


def test_override_list() -> None:
    assert load_config(None, ["model.freeze=[0,1]"]).model.freeze == [0, 1]


def test_override_int_freeze() -> None:
    assert load_config(None, ["model.freeze=3"]).model.freeze == 3


def test_override_uri_is_a_string() -> None:
    uri = load_config(None, ["tracking.uri=http://x"]).tracking.uri
    assert uri == "http://x"
    assert isinstance(uri, str)


def test_override_value_containing_equals_sign() -> None:
    assert load_config(None, ["tracking.run_name=a=b"]).tracking.run_name == "a=b"


def test_override_float_and_bool() -> None:
    config = load_config(None, ["train.lr0=0.05", "train.cos_lr=true", "augment.mosaic=0"])
    assert config.train.lr0 == pytest.approx(0.05)
    assert config.train.cos_lr is True
    assert config.augment.mosaic == 0.0


def test_override_beats_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "train:\n  epochs: 3\n  batch: 4\n")
    config = load_config(path, ["train.epochs=7"])
    assert config.train.epochs == 7
    assert config.train.batch == 4


def test_later_override_wins() -> None:
    assert load_config(None, ["train.epochs=5", "train.epochs=6"]).train.epochs == 6


def test_overrides_do_not_mutate_the_raw_mapping() -> None:
    raw = {"train": {"epochs": 3}}
    build_config(raw, "<t>", ["train.epochs=9"])
    assert raw == {"train": {"epochs": 3}}


def test_parse_override() -> None:
    assert parse_override("train.epochs=5") == (["train", "epochs"], 5)
    assert parse_override(" train.device = cpu") == (["train", "device"], "cpu")
    assert parse_override("data.name=") == (["data", "name"], "")


def test_device_as_a_bare_gpu_index() -> None:
    assert load_config(None, ["train.device=0"]).train.device == "0"


def test_device_list_string() -> None:
    assert load_config(None, ["train.device=0,1"]).train.device == "0,1"
    assert load_config(None, ["train.device=CPU"]).train.device == "cpu"


# ---- one-line errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("train:\n  epochs: -3\n", "train.epochs: must be > 0, got -3"),
        ("train:\n  epochs: 0\n", "train.epochs: must be > 0, got 0"),
        ("train:\n  epoch: 3\n", "train.epoch: unknown key"),
        ("trian:\n  epochs: 3\n", "trian: unknown key"),
        ('train:\n  batch: "abc"\n', "train.batch: must be an integer, got 'abc'"),
        ("train:\n  epochs: 2.5\n", "train.epochs: must be an integer, got 2.5"),
        ("train:\n  imgsz: 100\n", "train.imgsz: must be a multiple of 32, got 100"),
        ("train:\n  device: gpu\n", "train.device: must be auto, cpu, mps or GPU indices like 0 or 0,1, got 'gpu'"),
        ("model:\n  freeze: [0, -1]\n", "model.freeze: must be >= 0, got [0, -1]"),
        ("train:\n  amp: maybe\n", "train.amp: must be true or false, got 'maybe'"),
        ("augment:\n  mosaic: 1.5\n", "augment.mosaic: must be <= 1, got 1.5"),
        ("train: 5\n", "train: must be a mapping of keys, got 5"),
        ("train:\n  epochs: -3\n  batch: 0\n", "train.epochs: must be > 0, got -3 (and 1 more)"),
        (
            "augment:\n  preset: surfce\n",
            "augment.preset: must be one of none, surface, surface-light, ultralytics, got 'surfce'",
        ),
        # null is "not set" only where the default is "": a name with a default of its own still needs a value
        ("tracking:\n  experiment:\n", "tracking.experiment: must be a string, got None"),
    ],
)
def test_bad_value_names_file_and_field(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "x.yaml", content)
    assert config_error(path) == f"{path}: {expected}"


def test_preset_typo_is_found_before_ultralytics_is_imported(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "augment:\n  preset: surfce\n")
    code = (
        "import sys\nfrom pipeline.config import ConfigError, load_config\n"
        f"try:\n    load_config({str(path)!r})\nexcept ConfigError as exc:\n"
        "    print(exc)\n    print('ultralytics' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        f"{path}: augment.preset: must be one of none, surface, surface-light, ultralytics, got 'surfce'",
        "False",
    ]


def test_error_from_override_mentions_overrides(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "train:\n  epochs: 3\n")
    assert config_error(path, ["train.epochs=-3"]) == f"{path} (with overrides): train.epochs: must be > 0, got -3"


def test_literal(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "train:\n  optimizer: Foo\n")
    message = config_error(path)
    assert message.startswith(f"{path}: train.optimizer: must be one of ")
    assert message.endswith(", got 'Foo'")
    assert "'SGD'" in message and "'AdamW'" in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "train:\n  epochs: 3\n bad: [\n")
    message = config_error(path)
    assert message.startswith(f"{path}: line 3: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert config_error(path) == f"{path}: no such config file"


def test_folder_instead_of_file(tmp_path: Path) -> None:
    message = config_error(tmp_path)
    assert message.startswith(f"{tmp_path}: cannot read")


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "- train\n- epochs\n")
    assert config_error(path) == f"{path}: the top level must be a mapping of sections, got list"


def test_top_level_scalar(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "42\n")
    assert config_error(path) == f"{path}: the top level must be a mapping of sections, got int"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainepochs=3", "override 'trainepochs=3': the key must be section.key, e.g. train.epochs=5"),
        ("train.epochs", "override 'train.epochs': expected section.key=value"),
        ("=3", "override '=3': expected section.key=value"),
        ("a.b.c=1", "override 'a.b.c=1': the key must be section.key, e.g. train.epochs=5"),
        ("train.=1", "override 'train.=1': the key must be section.key, e.g. train.epochs=5"),
    ],
)
def test_malformed_overrides(override: str, expected: str) -> None:
    assert config_error(None, [override]) == expected


def test_override_into_a_non_section(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "train: 5\n")
    assert config_error(path, ["train.epochs=3"]) == "override 'train.epochs=3': train is not a section"


def test_override_unknown_key() -> None:
    assert config_error(None, ["train.epoch=3"]) == "<defaults> (with overrides): train.epoch: unknown key"


# ---- save / flat --------------------------------------------------------------------------------


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            "train.epochs=5",
            "model.freeze=[0,1]",
            "tracking.uri=http://x",
            "train.device=0,1",
            "augment.mosaic=0.25",
            "data.name=neu det",
        ],
    )
    path = save_config(config, tmp_path / "deep" / "folder" / "config.yaml")
    assert path.is_file()
    assert load_config(path) == config


def test_save_defaults_round_trips(tmp_path: Path) -> None:
    assert load_config(save_config(Config(), tmp_path / "c.yaml")) == Config()


def test_flat_keys() -> None:
    flat = load_config(None, ["train.epochs=5"]).flat()
    assert flat["train.epochs"] == 5
    assert flat["model.weights"] == "yolo11n.yaml"
    assert flat["tracking.uri"] == ""
    assert all(key.count(".") == 1 for key in flat)
    sections = {key.split(".")[0] for key in flat}
    assert sections == {"data", "model", "train", "augment", "gradients", "tracking"}
    assert "tracking.tags" not in flat  # tags go on the run as tags
    assert len(flat) + 1 == sum(
        len(type(s).model_fields)
        for s in (DataConfig(), ModelConfig(), TrainConfig(), AugmentConfig(), GradientsConfig(), TrackingConfig())
    )


def test_gradients_section_defaults_and_overrides() -> None:
    config = load_config(None, ["gradients.grouping=block", "gradients.every=4", "gradients.reductions=[mean]"])
    assert config.gradients.grouping == "block" and config.gradients.every == 4
    assert config.gradients.reductions == ["mean"]
    assert Config().gradients.enabled and Config().gradients.reductions == ["mean", "max", "last"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "gradients.grouping=module",
            "gradients.grouping: must be one of 'parameter', 'layer' or 'block', got 'module'",
        ),
        ("gradients.every=0", "gradients.every: must be >= 1, got 0"),
        (
            "gradients.reductions=[median]",
            "gradients.reductions.0: must be one of 'mean', 'max' or 'last', got 'median'",
        ),
    ],
)
def test_gradients_section_errors_name_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert str(error.value) == f"<defaults> (with overrides): {message}"


def test_assignment_is_validated() -> None:
    config = Config()
    with pytest.raises(ValueError):
        config.train.epochs = -1


def test_null_text_means_not_set_like_empty(tmp_path: Path) -> None:
    # `uri:` with nothing after it (a value deleted, a template left blank) reads as null in YAML.
    blank = write(tmp_path / "blank.yaml", "data:\n  path:\n  name:\ntrain:\n  name:\ntracking:\n  uri:\n  run_name:\n")
    empty = 'data: {path: "", name: ""}\ntrain: {name: ""}\ntracking: {uri: "", run_name: ""}\n'
    assert load_config(blank) == load_config(write(tmp_path / "empty.yaml", empty)) == Config()
    assert load_config(None, ["tracking.uri=null"]).tracking.uri == ""


def test_empty_section_is_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "train:\n  # epochs: 3\n")
    assert load_config(path).train == TrainConfig()


def test_retired_gradient_thresholds_are_said_and_ignored(caplog) -> None:
    with caplog.at_level("WARNING", logger="pipeline.config"):
        config = build_config({"gradients": {"explode_norm": 1e5, "vanish_abs": 1e-8, "every": 2}})
    assert config.gradients.every == 2 and "explode_norm" not in config.gradients.model_dump()
    assert [r.getMessage() for r in caplog.records] == [
        "config: gradients.vanish_abs: no longer used (the gradient doctor needs no thresholds)"
    ]


def test_class_values_read_class_number_pairs_and_name_a_bad_one() -> None:
    from pipeline.config import ConfigError, class_values

    assert class_values(["scratch=0.4", "default=0.3", "a=b=0.5"], "--threshold", "CLASS=SCORE") == {
        "scratch": 0.4,
        "default": 0.3,
        "a=b": 0.5,  # the last "=" splits: a class name may hold one
    }
    for bad in ("scratch", "=0.4", "scratch=high"):
        with pytest.raises(ConfigError, match=rf"^--recall '{bad}': expected CLASS=RECALL$"):
            class_values([bad], "--recall", "CLASS=RECALL")
