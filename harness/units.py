"""Sizes and durations as model.yaml and the command line write them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION = 24 * 3600.0  # longer waits are a typo, and overflow the clocks they are set on


def parse_size(value: object) -> int:
    """Bytes in ``512M``, ``1G``, ``128K`` or a plain number (binary multiples, as Docker reads them)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size such as 512M or 1G, got {value!r}")
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"expected a size such as 512M or 1G, got {value!r}")
    return int(float(match[1]) * 1024 ** _POWERS[match[2].lower()])


def parse_duration(value: object) -> float:
    """Seconds in ``20s``, ``5m``, ``1h``, ``500ms`` or a plain number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration such as 20s or 5m, got {value!r}")
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration such as 20s or 5m, got {value!r}")
    seconds = float(match[1]) * _SECONDS[match[2] or "s"]
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration must be at most 24h, got {str(value)[:40]!r}")
    return seconds


_ENGINE_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_engine_time(value: object) -> float | None:
    """An engine's time (RFC 3339, up to nanoseconds) as Unix seconds; None when it is not
    one, or is the zero time ("0001-01-01T00:00:00Z") an engine gives for "never"."""
    found = _ENGINE_TIME.match(value) if isinstance(value, str) else None
    if found is None:
        return None
    zone = "+00:00" if found[3] == "Z" else found[3]
    try:
        whole = datetime.fromisoformat(found[1] + zone).astimezone(UTC).timestamp()
    except ValueError:
        return None
    if whole <= 0:
        return None
    return whole + float("0." + (found[2] or "0"))
