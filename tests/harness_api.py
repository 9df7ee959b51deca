"""The names the suite takes from the harness, in one place.

The suite checks the harness from outside (pytest in a subprocess); it imports only the
constants that a user-visible message or label is made of, so that a test never retypes
them. The limits README promises (1 GiB, 1 CPU, 1024 processes, a 16 KiB log tail, 1 MiB
of body) are written out in the tests that check them: taken from the code, they would
follow a change that breaks the promise.
"""

from __future__ import annotations

import pytest

from harness.http import BODY_CAP
from harness.labels import LABEL, LOADED_IMAGE_LABEL, OWNER_LABEL, SESSION_LABEL, owner_token
from harness.options import EXIT_NOT_EVALUATED, PASSWORD_ENV, USERNAME_ENV

EXIT_INTERRUPTED = int(pytest.ExitCode.INTERRUPTED)
EXIT_USAGE = int(pytest.ExitCode.USAGE_ERROR)
BODY_CUT = f"[body cut at {BODY_CAP // 1024} KiB]"

__all__ = [
    "BODY_CUT",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_EVALUATED",
    "EXIT_USAGE",
    "LABEL",
    "LOADED_IMAGE_LABEL",
    "OWNER_LABEL",
    "PASSWORD_ENV",
    "SESSION_LABEL",
    "USERNAME_ENV",
    "owner_token",
]


def owner_pid(token: str) -> int | None:
    """The pid in an owner token ``host:namespace/pid/start-ticks``."""
    try:
        return int(token.rsplit("/", 2)[1])
    except (IndexError, ValueError):
        return None
