"""Errors that the CLI reports as one clear message and a non-zero exit code."""


class HyperrestartError(Exception):
    """A user-facing failure: the message says what is wrong and how to fix it."""

    exit_code = 1


class LocalChangesError(HyperrestartError):
    exit_code = 3


class BusyError(HyperrestartError):
    exit_code = 4


class CacheError(HyperrestartError):
    """The per-user cache cannot be used (an environment problem, reported as it is, never as a check's finding)."""
