"""The names the suite takes from the harness, in one place.

The suite checks the harness from outside (pytest in a subprocess); it imports only the
constants that a user-visible message or label is made of, so that a test never retypes
them. The harness is being reorganised: while both layouts exist, the fallbacks below
name where the same constant lived before (``harness.labels`` is the new home of labels).
"""

from __future__ import annotations

from harness.http import BODY_CAP
from harness.options import PASSWORD_ENV, USERNAME_ENV
from harness.plugin import EXIT_NOT_EVALUATED

try:
    from harness.labels import LABEL, OWNER_LABEL, owner_token
except ImportError:  # before the redesign: labels lived in run.py and reaper.py
    from harness.reaper import OWNER_LABEL, owner_token
    from harness.run import LABEL

try:
    from harness.labels import SESSION_LABEL
except ImportError:
    SESSION_LABEL = f"{LABEL}.session"

try:
    from harness.container import LOG_TAIL_BYTES
except ImportError:  # pragma: no cover - moved by the redesign
    LOG_TAIL_BYTES = 16 * 1024

EXIT_INTERRUPTED = 2
EXIT_USAGE = 4
BODY_CUT = f"[body cut at {BODY_CAP // 1024} KiB]"
# What README promises for a container when model.yaml declares nothing.
DEFAULT_MEMORY_BYTES = 2**30
DEFAULT_CPUS = 1
PIDS_LIMIT = 1024

__all__ = [
    "BODY_CUT",
    "DEFAULT_CPUS",
    "DEFAULT_MEMORY_BYTES",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_EVALUATED",
    "EXIT_USAGE",
    "LABEL",
    "LOG_TAIL_BYTES",
    "OWNER_LABEL",
    "PASSWORD_ENV",
    "PIDS_LIMIT",
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
