"""Exceptions with messages that name the bad value and the fix."""


class MedaucError(Exception):
    """Base class: a user-facing error. The CLI prints its message and exits with status 2."""


class ConfigError(MedaucError, ValueError):
    """A configuration file or override is invalid; the message says which key and how to fix it."""


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked; the message says why and what to do."""


class DataError(MedaucError):
    """A data set, file or manifest cannot be used as given."""


class ModelError(MedaucError):
    """A model cannot be created or its weights cannot be loaded."""


class EvaluationError(MedaucError, ValueError):
    """Predictions or labels cannot be evaluated as given."""


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the data given (for example an AUC with no negatives); it is nan."""


class ExportError(ModelError):
    """A model cannot be exported, or an exported file does not reproduce it."""
