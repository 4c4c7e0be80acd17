"""The one error type for user mistakes.

Anything the user can fix (a typo in a model name, a missing dataset, a corrupt checkpoint,
an invalid spec) raises :class:`DfaRayError` with a message that names the field or file,
says what was wrong and what to do. The CLI prints the message and exits with code 2 instead
of showing a traceback; library users can catch the one type.
"""

from __future__ import annotations


class DfaRayError(Exception):
    """A user-facing error: the message alone must be enough to fix the problem."""


class ConfigError(DfaRayError):
    """A configuration value (spec field, CLI option, recipe override) is invalid."""


class DataError(DfaRayError):
    """A dataset is missing, corrupt or of the wrong shape."""


class CheckpointError(DfaRayError):
    """A checkpoint, teacher or genotype file is missing, corrupt or does not match."""
