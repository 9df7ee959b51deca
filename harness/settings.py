"""Every option in one place: command line first, then the ini file, then the default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .run import DEFAULT_SHUTDOWN_TIMEOUT, RunOptions
from .units import parse_duration

# (flag, ini key, help)
OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--model-image", "model_image", "image to check, as a tag or reference in the engine (repeatable)"),
    ("--model-tar", "model_tar", "`docker save` archive of an image to check (repeatable)"),
    ("--model-yaml", "model_yaml", "the model's model.yaml (default: the one inside the image)"),
    ("--model-data", "model_data", "the author's test cases: examples/<case>/ and validation-error/<case>/"),
    (
        "--status-timeout",
        "model_status_timeout",
        "time for /status to answer 200, e.g. 20s (default: model.yaml's)",
    ),
    ("--run-timeout", "model_run_timeout", "time for one /run, e.g. 20s (default: model.yaml's)"),
    (
        "--shutdown-timeout",
        "model_shutdown_timeout",
        f"time for the process to exit after /shutdown (default {DEFAULT_SHUTDOWN_TIMEOUT:g}s)",
    ),
    (
        "--conformance-report",
        "model_report_dir",
        "directory for conformance.json and .html (default: ./reports)",
    ),
)
REPEATABLE = {"--model-image", "--model-tar"}


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("model-conformance", "model container conformance")
    for flag, ini, help_text in OPTIONS:
        dest = ini
        if flag in REPEATABLE:
            group.addoption(
                flag,
                action="append",
                dest=dest,
                default=[],
                metavar="REF" if "image" in flag else "PATH",
                help=help_text,
            )
            parser.addini(ini, help_text, type="linelist", default=[])
        else:
            group.addoption(flag, dest=dest, default=None, help=help_text)
            parser.addini(ini, help_text, default="")


@dataclass(frozen=True)
class Settings:
    images: tuple[str, ...]
    tars: tuple[Path, ...]
    options: RunOptions
    report_dir: Path

    @property
    def active(self) -> bool:
        return bool(self.images or self.tars)


def _value(config: pytest.Config, flag: str, ini: str) -> tuple[object, str]:
    """The raw value and a description of where it came from, for error messages."""
    cli = config.getoption(ini)
    if cli not in (None, []):
        return cli, flag
    raw = config.getini(ini)
    source = f"ini key {ini} in {config.inipath}" if config.inipath else f"ini key {ini}"
    return (raw if raw not in ("", []) else None), source


def _path(config: pytest.Config, raw: str, source: str) -> Path:
    # Command-line paths are relative to where pytest was started, ini paths to the ini file.
    base = (
        config.invocation_params.dir
        if source.startswith("--")
        else (config.inipath.parent if config.inipath else config.rootpath)
    )
    return (base / raw).resolve() if not Path(raw).is_absolute() else Path(raw)


def resolve(config: pytest.Config) -> Settings:
    values = {flag: _value(config, flag, ini) for flag, ini, _ in OPTIONS}

    def duration(flag: str) -> float | None:
        raw, source = values[flag]
        if raw is None:
            return None
        try:
            return parse_duration(raw)
        except ValueError as exc:
            raise pytest.UsageError(f"{source}: {exc}") from None

    def path(flag: str) -> Path | None:
        raw, source = values[flag]
        return None if raw is None else _path(config, str(raw), source)

    images_raw, _ = values["--model-image"]
    tars_raw, tars_source = values["--model-tar"]
    images = tuple(str(ref).strip() for ref in (images_raw or []) if str(ref).strip())  # type: ignore[attr-defined]
    tars = tuple(_path(config, str(p), tars_source) for p in (tars_raw or []))  # type: ignore[attr-defined]
    options = RunOptions(
        model_yaml=path("--model-yaml"),
        model_data=path("--model-data"),
        status_timeout=duration("--status-timeout"),
        run_timeout=duration("--run-timeout"),
        shutdown_timeout=duration("--shutdown-timeout") or DEFAULT_SHUTDOWN_TIMEOUT,
    )
    report_dir = path("--conformance-report") or config.invocation_params.dir / "reports"
    return Settings(images, tars, options, report_dir)
