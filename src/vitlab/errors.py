"""The one error type for bad input, and the "did you mean" hint of its messages.
The CLI prints a ``UserError``'s message on one line and exits with code 2."""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """Bad input from the user (a missing file, a wrong config value, ...).
    The message says what is wrong and how to fix it."""


def did_you_mean(value, options: Iterable, quote: bool = True) -> str:
    """`` (did you mean 'x'?)`` for the option closest to ``value``, or ''."""
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    if not close:
        return ""
    return f" (did you mean {close[0]!r}?)" if quote else f" (did you mean {close[0]}?)"


def choose(key: str, value, options: Iterable) -> UserError:
    """``UserError`` for a value of ``key`` that is not one of ``options``: names
    them all and the closest one."""
    options = [o for o in options]
    shown = ", ".join("null" if o is None else str(o) for o in options)
    return UserError(f"unknown {key} {value!r}{did_you_mean(value, [o for o in options if o is not None])}; "
                     f"choose {shown}")
