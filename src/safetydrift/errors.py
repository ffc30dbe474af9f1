"""Errors the CLI turns into one-line messages and exit code 2 (bad input) or 1 (run failure)."""

from __future__ import annotations


class SafetyDriftError(Exception):
    """Base class: anything raised as this is shown to the user as one line, without a traceback."""

    exit_code = 2


class SpecError(SafetyDriftError):
    """A spec string or recipe that does not parse or names an unknown setting."""


class UnknownComponentError(SafetyDriftError):
    """A name that no registry knows."""


class DataError(SafetyDriftError):
    """A missing, unreadable or malformed dataset file or row."""


class ModelLoadError(SafetyDriftError):
    """A model that cannot be found, fetched or loaded."""


class BackendError(SafetyDriftError):
    """A generation backend that failed in a way that is not a per-sample error (e.g. unreachable)."""


class JudgeError(SafetyDriftError):
    """A judge that cannot run at all (per-sample garbage is `unscorable`, not this)."""


class UnsupportedError(SafetyDriftError):
    """A valid request this machine cannot serve (e.g. GPTQ without a GPU)."""


class ComponentImportError(SafetyDriftError):
    """A built-in component whose module fails to import: a broken install or a bug, never skipped."""

    exit_code = 1
