"""Sizes and durations as model.yaml and the command line write them."""

from __future__ import annotations

import re

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
