"""A fresh virtual environment holding only what a line PC installs: the project's own dependencies, without
any extra (no torch, no ultralytics, no MLflow).

Made without a download: the distributions `pip install yolo-pipeline` would bring (the project's requirements
without extras, followed through their own) are linked from this environment's site-packages into a folder the
new environment reads through a ``.pth`` file, with the project's source beside them. What is not linked cannot
be imported there, so a screen that needs more fails. (`scripts/benchmarks/line_install.py` measures a real
``pip install`` of the same set, and its size.)
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "yolo-pipeline"
SOURCE = Path(__file__).resolve().parents[2]


def runtime_distributions(extras: tuple[str, ...] = ()) -> set[str]:
    """The distributions ``pip install yolo-pipeline[extras]`` installs besides the project, by their names."""
    wanted, seen = [(PROJECT, extras)], set()
    while wanted:
        name, chosen = wanted.pop()
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            environments = [{"extra": extra} for extra in chosen] or [{"extra": ""}]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
                continue
            key = canonicalize_name(requirement.name)
            if key == canonicalize_name(PROJECT):
                wanted.append((PROJECT, tuple(requirement.extras)))
            elif key not in seen:
                seen.add(key)
                wanted.append((requirement.name, tuple(requirement.extras)))
    return seen


def _top_level(distribution: str) -> set[str]:
    """The names a distribution puts at the top of site-packages (packages, modules, .libs folders, .dist-info)."""
    found = metadata.distribution(distribution)
    return {Path(str(file)).parts[0] for file in found.files or [] if not str(file).startswith("..")}


def make_line_venv(folder: Path, extras: tuple[str, ...] = ()) -> Path:
    """A venv in ``folder`` that sees only the runtime's distributions and the project; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "venv")], check=True)
    python = folder / "venv" / "bin" / "python"
    linked = folder / "site"
    linked.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for distribution in runtime_distributions(extras):
        for name in _top_level(distribution):
            if (site / name).exists() and not (linked / name).exists():
                (linked / name).symlink_to(site / name)
    (linked / "pipeline").symlink_to(SOURCE / "pipeline")
    packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(packages, "line.pth").write_text(f"{linked}\n", encoding="utf-8")
    return python


def clean_env() -> dict[str, str]:
    """This process's environment without what would let the venv see this one's packages."""
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
