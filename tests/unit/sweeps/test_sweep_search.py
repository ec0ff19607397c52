"""Random and Optuna search planned before anything runs: seeded draws, ranges checked, one-line errors."""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.config import ConfigError
from pipeline.sweeps.ray_sweep import RayOptions, check_tracking_for_cluster
from pipeline.sweeps.search_space import DISTRIBUTIONS, Range, bound_configs, draw, overrides_of, parse_range
from pipeline.sweeps.search_space import parse_space as space_of
from pipeline.sweeps.sweep import Child, SweepResult, parse_grid, plan_sweep
from pipeline.training.epoch_metrics import SUMMARY_METRICS
from tests.helpers.configs import tiny_config

SPACE = [
    "train.lr0=loguniform(1e-4,1e-1)",
    "train.batch=randint(2,5)",
    "train.optimizer=choice(SGD,AdamW)",
    "train.lrf=quniform(0.1,0.5,0.1)",
]


def _config_file(tmp_path: Path) -> Path:
    """An experiment YAML whose data need not exist: planning a sweep reads no image and trains nothing."""
    config = tiny_config(
        tmp_path / "no-data" / "data.yaml",
        tmp_path / "runs",
        tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    return path


def _nothing_ran(tmp_path: Path) -> bool:
    return not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def _values(overrides: list[str]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in overrides)


# --- the ranges and their draws --------------------------------------------------------------------------------


def test_ranges_read_as_their_function_and_numbers() -> None:
    ranges = [parse_range(item) for item in SPACE]
    assert ranges == [
        Range("train.lr0", "loguniform", (0.0001, 0.1)),
        Range("train.batch", "randint", (2, 5)),
        Range("train.optimizer", "choice", ("SGD", "AdamW")),
        Range("train.lrf", "quniform", (0.1, 0.5, 0.1)),
    ]
    assert [r.text() for r in ranges] == [
        "loguniform(0.0001,0.1)",
        "randint(2,5)",
        "choice(SGD,AdamW)",
        "quniform(0.1,0.5,0.1)",
    ]
    assert [r.extremes() for r in ranges] == [[0.0001, 0.1], [2, 4], ["SGD", "AdamW"], [0.1, 0.5]]
    assert isinstance(ranges[1].args[0], int) and isinstance(ranges[0].args[0], float)
    assert set(DISTRIBUTIONS) == {"uniform", "loguniform", "quniform", "randint", "choice"}


def test_ranges_are_ray_tune_domains() -> None:
    lr0, batch, optimizer, _ = (parse_range(item).domain() for item in SPACE)
    assert (lr0.lower, lr0.upper) == (0.0001, 0.1)
    assert (batch.lower, batch.upper) == (2, 5)
    assert optimizer.categories == ["SGD", "AdamW"]


def test_the_same_seed_draws_the_same_configs_and_another_seed_others() -> None:
    ranges = [parse_range(item) for item in SPACE]
    first = draw(ranges, 4, seed=7)
    assert draw(ranges, 4, seed=7) == first
    assert draw(ranges, 4, seed=8) != first
    assert len(first) == 4
    assert all([o.partition("=")[0] for o in child] == [r.key for r in ranges] for child in first)


def test_drawn_values_lie_within_their_ranges() -> None:
    ranges = [parse_range(item) for item in SPACE]
    drawn = draw(ranges, 40, seed=3)
    for child in drawn:
        values = _values(child)
        assert 0.0001 <= float(values["train.lr0"]) <= 0.1
        assert values["train.batch"] in {"2", "3", "4"}  # randint(2,5): 2 to 4, integers
        assert values["train.optimizer"] in {"SGD", "AdamW"}
        assert round(float(values["train.lrf"]) / 0.1) in {1, 2, 3, 4, 5}
    assert {_values(c)["train.batch"] for c in drawn} == {"2", "3", "4"}  # 40 draws reach every integer
    assert {_values(c)["train.optimizer"] for c in drawn} == {"SGD", "AdamW"}


def test_drawn_values_are_overrides_yaml_reads_back_unchanged() -> None:
    assert overrides_of({"train.lr0": 0.001234567890123, "train.batch": 3, "train.optimizer": "SGD"}) == [
        "train.lr0=0.001234567890123",
        "train.batch=3",
        "train.optimizer=SGD",
    ]
    assert yaml.safe_load(overrides_of({"train.lr0": 1e-05})[0].partition("=")[2]) == 1e-05  # not the string "1e-05"


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^--samples 0: must be at least 1$"):
        draw([parse_range(SPACE[0])], 0, seed=0)


def test_bound_configs_move_one_range_to_each_edge_the_others_at_their_lowest() -> None:
    ranges = [parse_range("train.lr0=uniform(0.001,0.1)"), parse_range("train.batch=randint(2,9)")]
    assert bound_configs(ranges) == [
        ["train.lr0=0.001", "train.batch=2"],
        ["train.lr0=0.1", "train.batch=2"],
        ["train.lr0=0.001", "train.batch=8"],  # randint's highest value is high - 1
    ]


# --- random search planned on a real config file -------------------------------------------------------------


def test_a_random_plan_is_the_same_for_the_same_seed_and_each_child_has_its_draw(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    space = ["train.lr0=loguniform(1e-4,1e-1)", "train.optimizer=choice(SGD,AdamW)"]
    plan = plan_sweep(path, {}, name="search", search="random", space=space, samples=3, seed=11)
    again = plan_sweep(path, {}, name="search", search="random", space=space, samples=3, seed=11)
    overrides = [child.overrides for child, _ in plan.children]
    assert overrides == [child.overrides for child, _ in again.children]
    assert len(overrides) == 3 and len({tuple(o) for o in overrides}) == 3
    for index, (child, config) in enumerate(plan.children):
        values = _values(child.overrides)
        assert child.index == index
        assert config.train.lr0 == float(values["train.lr0"])
        assert 0.0001 <= config.train.lr0 <= 0.1
        assert config.train.optimizer == values["train.optimizer"]
        assert child.run_name == f"search lr0={values['train.lr0']} optimizer={values['train.optimizer']}"
    assert plan.params == {
        "config": str(path),
        "search": "random",
        "space.train.lr0": "loguniform(0.0001,0.1)",
        "space.train.optimizer": "choice(SGD,AdamW)",
        "samples": 3,
        "seed": 11,
        "children": 3,
    }
    other = plan_sweep(path, {}, name="search", search="random", space=space, samples=3, seed=12)
    assert [child.overrides for child, _ in other.children] != overrides
    assert _nothing_ran(tmp_path)


def test_a_grid_key_in_a_random_search_is_a_choice(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    grid = parse_grid(["model.freeze=null,10"], required=False)
    plan = plan_sweep(path, grid, search="random", space=["train.lr0=uniform(0.001,0.01)"], samples=6, seed=0)
    assert plan.params["space.model.freeze"] == "choice(null,10)"
    assert {config.model.freeze for _, config in plan.children} <= {None, 10}
    assert all(0.001 <= config.train.lr0 <= 0.01 for _, config in plan.children)
    assert plan.name == "sweep-experiment"  # no name, no run_name: from the config file's name


def test_a_drawn_value_the_config_refuses_stops_the_plan(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    with pytest.raises(ConfigError) as caught:
        plan_sweep(path, {}, search="random", space=["train.lr0=uniform(1.5,2)"], samples=2, seed=0)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path} (sweep train.lr0=")
    assert ": train.lr0: " in message and "(with overrides)" not in message
    assert _nothing_ran(tmp_path)


def test_optuna_is_planned_by_its_bounds(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    with pytest.raises(ConfigError, match=r"\(sweep train\.lr0=2\): train\.lr0: ") as caught:
        plan_sweep(path, {}, search="optuna", space=["train.lr0=uniform(0.1,2)"], samples=5)
    assert "\n" not in str(caught.value)
    plan = plan_sweep(path, {}, search="optuna", space=["train.lr0=uniform(0.001,0.1)"], samples=5, seed=3)
    assert plan.children == []
    assert plan.params["children"] == 5 and plan.params["search"] == "optuna" and plan.params["seed"] == 3
    assert plan.params["space.train.lr0"] == "uniform(0.001,0.1)"
    assert plan.ranges == [Range("train.lr0", "uniform", (0.001, 0.1))]
    with pytest.raises(ConfigError, match=r"^--samples 0: must be at least 1$"):
        plan_sweep(path, {}, search="optuna", space=["train.lr0=uniform(0.001,0.1)"], samples=0)
    assert _nothing_ran(tmp_path)


# --- one-line errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("train.lr0=normal(0,1)", "unknown function normal; one of uniform, loguniform, quniform, randint, choice"),
        ("train.lr0=uniform(0.1)", "uniform(low,high): any number between"),
        ("train.lrf=quniform(0.1,0.5)", "quniform(low,high,q): uniform, rounded to a multiple of q"),
        ("train.lr0=uniform(0.1,0.1)", "the low bound 0.1 must be below the high bound 0.1"),
        ("train.lr0=uniform(0.5,0.1)", "the low bound 0.5 must be below the high bound 0.1"),
        ("train.lr0=loguniform(0,0.1)", "a log range must lie above 0"),
        ("train.lr0=loguniform(-1,0.1)", "a log range must lie above 0"),
        ("train.lrf=quniform(0.1,0.5,0)", "q must be above 0"),
        ("train.batch=randint(2.5,8)", "randint takes integers"),
        ("train.lr0=uniform(a,0.1)", "a is not a number"),
        ("train.lr0=uniform(nan,0.1)", "nan is not a number"),
        ("train.lr0=uniform(,0.1)", "(empty) is not a number"),
        ("lr0=uniform(0.001,0.1)", "the key must be section.key, e.g. train.lr0"),
        ("train.lr0", "expected section.key=function(...)"),
        ("train.lr0=0.01", "expected section.key=function(...)"),
        ("train.optimizer=choice()", "choice needs values"),
    ],
)
def test_a_bad_range_is_one_line_naming_the_item(item: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_range(item)
    message = str(caught.value)
    assert message.startswith(f"--space {item!r}: ")
    assert says in message and "\n" not in message


@pytest.mark.parametrize("item", ["train.lrf=quniform(0.1,0.55,0.1)", "train.lrf=quniform(0.15,0.5,0.1)"])
def test_quniform_bounds_off_the_grid_of_q_are_one_line_at_parse_time(item: str) -> None:
    with pytest.raises(ConfigError, match=rf"^--space {re.escape(repr(item))}: "):
        parse_range(item)  # not left to Tune, which raises a bare ValueError when it builds the domain


def test_a_key_in_both_space_and_grid_is_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        space_of(["train.lr0=uniform(0.001,0.1)"], {"train.lr0": ["0.01", "0.02"]})
    assert str(caught.value) == "--space: train.lr0 given more than once (in --space or --grid)"
    with pytest.raises(ConfigError, match=r"^--space: train\.lr0 given more than once"):
        space_of(["train.lr0=uniform(0.001,0.1)", "train.lr0=loguniform(1e-4,1e-1)"])


def test_a_random_search_without_ranges_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^sweep: a random or Optuna search needs at least one --space"):
        space_of([])


def test_a_grid_search_takes_no_space_and_an_unknown_search_is_named(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    grid = parse_grid(["model.freeze=null,10"])
    with pytest.raises(ConfigError) as caught:
        plan_sweep(path, grid, search="grid", space=["train.lr0=uniform(0.001,0.1)"])
    assert str(caught.value) == "--space: ranges are for --search random or optuna; a grid search takes --grid values"
    with pytest.raises(ConfigError) as caught:
        plan_sweep(path, grid, search="bayes")
    assert str(caught.value) == "--search bayes: one of grid, random, optuna"
    assert len(plan_sweep(path, grid).children) == 2  # the same grid, searched as a grid, plans
    assert _nothing_ran(tmp_path)


# --- Ray's options and the tracking store on a cluster ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (RayOptions(parallel=0), "--parallel 0: must be at least 1"),
        (RayOptions(cpus_per_trial=0), "--cpus-per-trial must be above 0 and --gpus-per-trial at least 0"),
        (RayOptions(gpus_per_trial=-1), "--cpus-per-trial must be above 0 and --gpus-per-trial at least 0"),
        (RayOptions(metric="accuracy"), "--metric accuracy: one of mAP50_95, mAP50,"),
        (RayOptions(early_stop="hyperband"), "--early-stop hyperband: one of asha"),
        (RayOptions(grace=0), "--grace 0: must be at least 1 epoch"),
    ],
)
def test_bad_ray_options_are_one_line(options: RayOptions, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        options.check(epochs=5)
    assert str(caught.value).startswith(says) and "\n" not in str(caught.value)


def test_the_mode_follows_the_metric() -> None:
    assert RayOptions(metric="val.box_loss").mode == "min"
    assert RayOptions(metric="mAP50_95").mode == "max"
    assert {m: RayOptions(metric=m).mode for m in SUMMARY_METRICS} == {
        "mAP50_95": "max",
        "mAP50": "max",
        "precision": "max",
        "recall": "max",
        "fitness": "max",
        "val.box_loss": "min",
        "val.cls_loss": "min",
        "val.dfl_loss": "min",
    }


def test_a_grace_as_long_as_the_training_is_a_warning(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(logging.getLogger("pipeline"), "propagate", True)  # cli.main turns it off
    with caplog.at_level(logging.WARNING, logger="pipeline.sweeps"):
        assert RayOptions(early_stop="asha", grace=3).check(epochs=3) is None
        assert RayOptions(early_stop="asha", grace=2).check(epochs=3) is None
        assert RayOptions(grace=3).check(epochs=3) is None  # no scheduler: the grace means nothing
    # a set: after other tests' cli.main, a record can reach caplog by two handlers
    assert {r.getMessage() for r in caplog.records if r.name == "pipeline.sweeps"} == {
        "--grace 3: the trials train 3 epochs; ASHA can stop none of them"
    }


@pytest.mark.parametrize("uri", ["sqlite:///runs/mlflow.db", "file:///tmp/mlruns", "mlruns", "/data/mlruns"])
def test_a_store_in_a_file_is_refused_on_a_cluster(uri: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_tracking_for_cluster(uri, "ray://head:10001")
    message = str(caught.value)
    assert message.startswith(f"tracking.uri: {uri} is a store in a file on this machine")
    assert "ray://head:10001" in message and "\n" not in message
    assert check_tracking_for_cluster(uri, "") is None  # one machine: every trial reaches the file


def test_a_tracking_server_is_accepted_on_a_cluster() -> None:
    assert check_tracking_for_cluster("http://127.0.0.1:5000", "ray://head:10001") is None
    assert check_tracking_for_cluster("https://mlflow.example.com", "10.0.0.1:6379") is None


# --- the command line --------------------------------------------------------------------------------------


def _one_line_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_ray_only_options_with_the_local_engine_are_one_line(tmp_path: Path, capsys) -> None:
    path = str(_config_file(tmp_path))
    line = _one_line_error(capsys, ["sweep", path, "--grid", "model.freeze=null,10", "--early-stop", "asha"])
    assert line == "error: sweep: --early-stop needs --engine ray (the local engine trains one child after another)"
    line = _one_line_error(capsys, ["sweep", path, "--grid", "model.freeze=null,10", "--parallel", "2"])
    assert line.startswith("error: sweep: --parallel needs --engine ray")
    line = _one_line_error(capsys, ["sweep", path, "--search", "optuna", "--space", "train.lr0=uniform(0.001,0.1)"])
    assert line == "error: sweep: --search optuna needs --engine ray (the local engine trains one child after another)"
    assert _nothing_ran(tmp_path)


def test_a_sweep_without_a_config_or_resume_is_one_line(capsys) -> None:
    assert _one_line_error(capsys, ["sweep"]) == "error: sweep: name the experiment YAML (or --resume PARENT_RUN)"


def test_resuming_from_a_server_that_does_not_answer_is_one_line_and_quick(capsys) -> None:
    started = time.monotonic()
    line = _one_line_error(capsys, ["sweep", "--resume", "0123456789abcdef", "--tracking-uri", "http://127.0.0.1:9"])
    assert time.monotonic() - started < 30
    assert line.startswith("error: sweep --resume 0123456789abcdef: ")
    assert "127.0.0.1:9" in line


def test_resuming_without_a_store_is_one_line(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'absent.db'}"
    line = _one_line_error(capsys, ["sweep", "--resume", "0123456789abcdef", "--tracking-uri", uri])
    assert line == f"error: sweep --resume 0123456789abcdef: no MLflow store at {tmp_path / 'absent.db'} " + (
        "(give --tracking-uri or set MLFLOW_TRACKING_URI)"
    )
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize(
    ("space", "says"),
    [
        ("train.lr0=uniform(0.5,0.1)", "the low bound 0.5 must be below the high bound 0.1"),
        ("train.lr0=gauss(0,1)", "unknown function gauss"),
    ],
)
def test_a_bad_space_on_the_command_line_is_one_line(tmp_path: Path, capsys, space: str, says: str) -> None:
    path = str(_config_file(tmp_path))
    line = _one_line_error(capsys, ["sweep", path, "--search", "random", "--space", space])
    assert line.startswith(f"error: --space {space!r}: ") and says in line
    assert _nothing_ran(tmp_path)


def test_a_drawn_value_the_config_refuses_on_the_command_line_is_one_line(tmp_path: Path, capsys) -> None:
    path = str(_config_file(tmp_path))
    argv = ["sweep", path, "--search", "random", "--space", "train.lr0=uniform(1.5,2)", "--samples", "2"]
    line = _one_line_error(capsys, argv)
    assert line.startswith(f"error: {path} (sweep train.lr0=") and ": train.lr0: " in line
    assert _nothing_ran(tmp_path)


# --- the sweep's counts -----------------------------------------------------------------------------------


def test_a_sweep_result_counts_finished_stopped_and_failed_children() -> None:
    children = [
        Child(0, ["train.lr0=0.01"], "a", "run-a", "FINISHED", score=0.31),
        Child(1, ["train.lr0=0.02"], "b", "run-b", "KILLED"),
        Child(2, ["train.lr0=0.03"], "c", "run-c", "FAILED", error="RuntimeError: out of memory"),
        Child(3, ["train.lr0=0.04"], "d", "run-d", "FINISHED", score=0.52),
        Child(4, ["train.lr0=0.05"], "e", None, "PENDING"),
        Child(5, ["train.lr0=0.06"], "f", "run-f", "FINISHED", score=math.nan),
    ]
    result = SweepResult("parent", "tests", "sqlite:///mlflow.db", children)
    assert [c.index for c in result.finished] == [0, 3, 5]
    assert [c.index for c in result.stopped] == [1]
    assert [c.index for c in result.failed] == [2, 4]  # never ended counts as failed
    assert result.best is children[3]  # a NaN score is no score
    assert SweepResult("parent", "tests", "").best is None
    assert SweepResult("p", "t", "", [Child(0, [], "x", status="FINISHED", score=math.nan)]).best is None
