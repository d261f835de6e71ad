"""User-facing errors: one clear line, a non-zero exit, a traceback only with --debug."""

from __future__ import annotations


class TalkrtError(Exception):
    """A mistake the user can fix (bad file, wrong checkpoint, bad option).

    The CLI prints ``str(err)`` on one line and exits with ``exit_code``.
    """

    exit_code = 2


class MissingDependency(TalkrtError):
    """An optional backend is not installed; the message gives the install command."""

    exit_code = 3


class ValidationFailed(TalkrtError):
    """An exported graph or engine disagrees with its reference beyond the spec's tolerance."""

    exit_code = 4


class TalkrtWarning(UserWarning):
    """Input that works but may give a result the user did not mean (the CLI prints one line)."""
