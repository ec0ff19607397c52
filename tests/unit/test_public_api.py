"""`from pipeline import NAME` gives the documented function or class whatever was imported before it.

Importing a subpackage binds its name on `pipeline`, over any lazy export of the same name: the packages are
nouns (training, sweeps, comparison, evaluation, promotion) so that no export is ever hidden by one.
"""

from __future__ import annotations

import importlib
import pkgutil
import types

import pipeline


def test_every_export_is_the_documented_object_after_every_subpackage_is_imported() -> None:
    for found in pkgutil.iter_modules(pipeline.__path__):
        if found.ispkg:
            importlib.import_module(f"pipeline.{found.name}")
    for name in pipeline.__all__:
        exported = getattr(pipeline, name)
        assert not isinstance(exported, types.ModuleType), f"pipeline.{name} is a module, not the export"
        assert exported.__name__ == name
