"""The documented error types: everything rnnkit raises on bad input derives from these
(or is a plain ValueError/TypeError from argument checks)."""


class RnnkitError(Exception):
    """Base of rnnkit's own errors; the CLI prints them as one line."""


class DataError(RnnkitError, ValueError):
    """A data file or corpus cannot be used (missing, empty, not UTF-8, malformed line)."""


class CheckpointError(RnnkitError, ValueError):
    """A run directory or checkpoint is missing, corrupt, or does not match its config."""


class TrainingError(RnnkitError, RuntimeError):
    """Training cannot go on (e.g. a NaN/Inf loss or gradient)."""
