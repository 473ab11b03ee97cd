"""Error types that name what is wrong and where."""


class KDBenchError(Exception):
    """Base class: every error kdbench raises on bad input derives from this."""


class ConfigError(KDBenchError):
    """A config file or a method manifest does not match its schema."""


class DataError(KDBenchError):
    """A data file is malformed (the message names the file and line)."""


class MethodError(KDBenchError):
    """A method directory is broken (the message names the directory)."""


class ResultError(KDBenchError):
    """A result file is missing, inconsistent, or from another schema version."""


class TrainingError(KDBenchError):
    """Training cannot continue (e.g. a non-finite loss)."""
