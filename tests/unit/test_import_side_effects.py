"""Importing the package, or any of its modules, writes no file and changes nothing outside the process.

Every module is imported in one fresh interpreter whose home, working folder and temporary folder are
empty folders of the test: after each import neither the home nor the working folder holds anything,
and after the interpreter exits the temporary folder is empty again (ultralytics' settings folder
lives there while the process runs). The environment variables the imports set are the ones listed;
no connection is tried (with ``YOLO_OFFLINE``, which turns off ultralytics' own DNS check at import)
and no logging handler is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Set by the package itself, each only where a library reads it when it is first imported.
OWN_VARIABLES = {
    "YOLO_CONFIG_DIR",  # ultralytics' settings: a temporary folder of this process (pipeline.yolo_env)
    "YOLO_AUTOINSTALL",  # ultralytics installs no package (pipeline.yolo_env)
    "ULTRALYTICS_SAFE_LOAD",  # checkpoints load safely (pipeline.load_policy)
    "NO_ALBUMENTATIONS_UPDATE",  # albumentations asks PyPI for no newer version (pipeline.augment.fast_transforms)
    "MLFLOW_DISABLE_TELEMETRY",  # mlflow writes no ~/.config/mlflow/telemetry.json, sends nothing (pipeline.tracking)
    "ORT_DISABLE_TELEMETRY",  # ONNX Runtime writes nothing under ~/.cache/Microsoft, sends nothing (pipeline.telemetry)
}
# Set by the libraries' own imports, which some modules import at theirs.
LIBRARY_VARIABLES = {
    **dict.fromkeys(
        ["OMP_NUM_THREADS", "NUMEXPR_MAX_THREADS", "TF_CPP_MIN_LOG_LEVEL", "TORCH_CPP_LOG_LEVEL", "KINETO_LOG_LEVEL"],
        "ultralytics",
    ),
    **dict.fromkeys(["LD_LIBRARY_PATH", "QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"], "opencv"),
    "_RJEM_MALLOC_CONF": "polars",
    "RAY_CLIENT_MODE": "ray.tune (imported by pipeline.sweeps.tune_trial)",
}

_IMPORT_ALL = """
import importlib, json, logging, os, socket, sys
from pathlib import Path

attempts = []


def refuse(*args, **kwargs):
    attempts.append(repr(args)[:200])
    raise OSError("no network while importing")


socket.getaddrinfo, socket.socket.connect = refuse, refuse
home, cwd = Path(os.environ["HOME"]), Path.cwd()
before, handlers = dict(os.environ), list(logging.getLogger().handlers)
created = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    found = sorted(str(p) for folder in (home, cwd) for p in folder.rglob("*"))
    if found:
        created[name] = found
        break  # the first module that wrote something is the one to name
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
added_handlers = len(logging.getLogger().handlers) - len(handlers)
print(json.dumps({"created": created, "changed": changed, "network": attempts, "root_handlers": added_handlers}))
"""


def _modules() -> list[str]:
    names = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_importing_every_module_writes_nothing_and_sets_only_the_listed_variables(tmp_path: Path) -> None:
    home, cwd, tmp = tmp_path / "home", tmp_path / "cwd", tmp_path / "tmp"
    for folder in (home, cwd, tmp):
        folder.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "PYTHONPATH": str(REPO),
        "YOLO_OFFLINE": "true",  # ultralytics looks up two DNS names at import otherwise; hermetic tests do not
    }
    modules = _modules()
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *modules], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["created"] == {}
    assert [os.listdir(folder) for folder in (home, cwd, tmp)] == [[], [], []]  # the settings folder went at exit
    assert set(report["changed"]) - set(LIBRARY_VARIABLES) == OWN_VARIABLES
    assert report["network"] == []  # albumentations' version check is off before its import
    assert report["root_handlers"] == 0  # no logging configured on import: the CLI does that in main()
    assert {"pipeline.training.trainer", "pipeline.cli", "pipeline.inference.ray_engine"} <= set(modules)
