"""pipeline/quiet.py: other libraries' housekeeping output only behind -v, this tool's and the training's always."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.quiet import set_verbose

BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
DB_LINES = ["Creating initial MLflow database tables...", "Updating database tables"]  # a new store, in order


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(autouse=True)
def _verbose_after(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(BAR, raising=False)
    yield
    set_verbose(True)


@pytest.fixture
def collected(request: pytest.FixtureRequest) -> Iterator[Collect]:
    """What reaches the handlers of the logger named by the test's parameter ``logger``."""
    logger = logging.getLogger(request.param)
    handler = Collect()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("collected", ["ultralytics"], indirect=True)
@pytest.mark.parametrize("verbose", [False, True])
def test_ultralytics_banner_and_optimizer_lines_only_when_verbose(verbose: bool, collected: Collect) -> None:
    from pipeline.yolo_env import configure_ultralytics

    set_verbose(verbose)
    configure_ultralytics()
    from ultralytics.utils import LOGGER

    housekeeping = [
        "Creating new Ultralytics Settings v0.0.8 file ✅ \nView Ultralytics Settings with 'yolo settings'",
        "Optimizer stripped from /tmp/tmpu8kn3xni/weights/best.pt, 5.4MB",
    ]
    training = ["Starting training for 2 epochs...", "1 epochs completed in 0.002 hours."]
    for message in [*housekeeping, *training]:
        LOGGER.info(message)
    assert collected.messages == ([*housekeeping, *training] if verbose else training)


@pytest.mark.parametrize("verbose", [False, True])
def test_the_settings_banner_of_a_fresh_process(verbose: bool, tmp_path: Path) -> None:
    # ultralytics prints it on import, into a settings folder made fresh for every process (pipeline/yolo_env.py).
    code = (
        "from pipeline.quiet import set_verbose\nfrom pipeline.yolo_env import configure_ultralytics\n"
        f"set_verbose({verbose})\nconfigure_ultralytics()\nprint('configured')\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "YOLO_CONFIG_DIR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.endswith("configured\n")
    assert ("Creating new Ultralytics Settings" in out) is verbose


@pytest.mark.parametrize("collected", ["mlflow"], indirect=True)
@pytest.mark.parametrize("verbose", [False, True])
def test_mlflow_database_creation_lines_only_when_verbose(verbose: bool, collected: Collect, tmp_path: Path) -> None:
    set_verbose(verbose)
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "mlruns"))
    assert [m for m in collected.messages if m in DB_LINES] == (DB_LINES if verbose else [])


@pytest.mark.parametrize("verbose", [False, True])
def test_mlflow_artifact_progress_bars_only_when_verbose(verbose: bool) -> None:
    from mlflow.utils.file_utils import ArtifactProgressBar

    set_verbose(verbose)
    with ArtifactProgressBar.files("Downloading artifacts", total=1) as bar:
        assert (bar.pbar is not None) is verbose


def test_a_progress_bar_setting_of_the_user_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BAR, "true")
    set_verbose(False)
    assert os.environ[BAR] == "true"
    set_verbose(True)
    assert os.environ[BAR] == "true"


def test_verbose_again_undoes_quiet() -> None:
    set_verbose(False)
    assert os.environ[BAR] == "false"
    assert logging.getLogger("mlflow.system_metrics").level == logging.WARNING
    set_verbose(True)
    assert BAR not in os.environ
    # Back to MLflow's own levels (set on its "mlflow" logger when it is imported).
    assert logging.getLogger("mlflow.store.db.utils").level == logging.NOTSET
    assert logging.getLogger("mlflow.system_metrics").level == logging.NOTSET
    assert not logging.getLogger("ultralytics").filters
