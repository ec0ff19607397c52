"""The one-line errors of a prediction, apart from the engine: cheap to import, raised by every step."""

from __future__ import annotations

from pipeline.messages import UserError


class SourceError(UserError, ValueError):
    """A source that names nothing to predict on."""


class ModelError(UserError, ValueError):
    """A model source that cannot be loaded."""


class ResultsError(UserError, ValueError):
    """An output folder, or a setting, that cannot take these results."""
