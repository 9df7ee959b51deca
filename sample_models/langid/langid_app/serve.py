"""Entry point of the image: gunicorn, in-process, bound to ``$PSC_MODEL_PORT``."""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from gunicorn.app.base import BaseApplication

from . import rawhttp
from .server import create_app


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any], variant: str, ready_at: float) -> None:
        self.options = options
        self.variant = variant
        self.ready_at = ready_at
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.variant, self.ready_at)


def on_exit_with(code: int) -> Any:
    def on_exit(_server: Any) -> None:
        os._exit(code)

    return on_exit


def flood_log(mebibytes: int) -> None:
    line = ("langid: log flood " + "#" * 1000)[:1023] + "\n"
    for _ in range(mebibytes * 1024):
        sys.stdout.write(line)
    sys.stdout.flush()
    print(f"langid: wrote {mebibytes} MiB of log", flush=True)


def process_started() -> float:
    """When this process started (Unix time): a sample slow by the clock counts from there,
    not from the end of its imports, which a loaded machine stretches."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            # Field 22, counted after the command name (which may hold spaces), in clock ticks.
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            since_boot = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return time.time()
    return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))


def main() -> None:
    variant = os.environ.get("PSC_SAMPLE_VARIANT", "")
    if variant == "broken-missing-dependency":
        # As an image built without one of its requirements: the import fails, Python exits with 1.
        import torch  # type: ignore[import-not-found]  # noqa: F401

    if variant == "broken-exit-at-start":
        print("langid: refusing to start (sample defect: exit at start)", flush=True)
        sys.exit(3)
    port = "8080" if variant == "broken-ignores-port" else os.environ.get("PSC_MODEL_PORT", "")
    if not port.isdigit():
        print(f"langid: PSC_MODEL_PORT must be a port number, got {port!r}", flush=True)
        sys.exit(2)
    if variant == "hostile-slow-headers":
        rawhttp.serve(int(port))
        return
    ready_at = process_started() + float(os.environ.get("PSC_SAMPLE_READY_AFTER", "0"))
    if ready_at > time.time():
        stamp = datetime.fromtimestamp(ready_at, UTC).isoformat(timespec="milliseconds")
        print(f"langid: /status can answer 200 from {stamp}", flush=True)
    options: dict[str, Any] = {
        "bind": f"0.0.0.0:{port}",
        "workers": 1,
        "threads": 2,
        "timeout": 120,
        "graceful_timeout": 5,
        "accesslog": "-",
    }
    if variant == "broken-shutdown-exit-1":
        options["on_exit"] = on_exit_with(1)
    if variant == "hostile-crash-during-run":
        options["child_exit"] = lambda _server, _worker: os._exit(70)
    if variant == "hostile-dies-after-first-answer":
        options["child_exit"] = lambda _server, _worker: os._exit(3)
    flood = int(os.environ.get("PSC_SAMPLE_LOG_FLOOD_MIB", "0"))
    if flood:
        threading.Thread(target=flood_log, args=(flood,), daemon=True).start()
    Server(options, variant, ready_at).run()


if __name__ == "__main__":
    main()
