"""The one-line errors of a prediction (kept apart so the command line can import them cheaply)."""

from __future__ import annotations


class SourceError(ValueError):
    """A source that names nothing to predict on."""


class ModelError(ValueError):
    """A model source that cannot be loaded."""


class ResultsError(ValueError):
    """An output folder, or a setting, that cannot take these results."""
