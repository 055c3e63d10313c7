"""Exceptions with messages that name the bad value and the fix."""


class MedaucError(Exception):
    """Base class: a user-facing error. The CLI prints its message and exits with status 2."""


class DataError(MedaucError):
    """A data set, file or manifest cannot be used as given."""


class ModelError(MedaucError):
    """A model cannot be created or its weights cannot be loaded."""


class EvaluationError(MedaucError, ValueError):
    """Predictions or labels cannot be evaluated as given."""
