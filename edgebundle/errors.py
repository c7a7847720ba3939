"""User-facing errors.

Every failure a user can cause or meet raises a subclass of :class:`EdgebundleError`. Its message
names what is wrong; its ``hint`` says what to do. The command-line front ends map ``exit_code``
to the process exit status (see docs/EXIT_CODES.md).
"""

from __future__ import annotations


class EdgebundleError(Exception):
    """Base for user-facing failures: message names what is wrong, hint says what to do."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(EdgebundleError):
    """The command line or an input document is malformed."""

    exit_code = 2


class VerificationError(EdgebundleError):
    """A bundle (or part of one) failed verification; nothing was changed."""

    exit_code = 4


class RegistryError(EdgebundleError):
    """A registry could not be reached or refused a request."""

    exit_code = 1
