"""User-facing errors: one line that names the problem and the fix."""

import difflib
import sys
from collections.abc import Iterable


class FramecastError(Exception):
    """An error caused by the user's input (config, data, checkpoint), shown as one line."""


class ConfigError(FramecastError, ValueError):
    """A config key, value or file is wrong."""


class InputError(FramecastError, ValueError):
    """Frames handed to a model have the wrong shape, type or range (a ``ValueError`` too)."""


class MissingPackage(FramecastError, ImportError):
    """An optional package a model or feature needs is not installed (an ``ImportError`` too)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(kind: str, word: str, choices: Iterable[str]) -> str:
    """Format an 'unknown X' message that lists the valid choices."""
    choices = sorted(choices)
    return f"unknown {kind} '{word}'{did_you_mean(word, choices)}; choose from: {', '.join(choices)}"


def warn(msg: str) -> None:
    """A one-line warning on stderr (a skipped file, a fallback taken)."""
    print(f"framecast: warning: {msg}", file=sys.stderr)
