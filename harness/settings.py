"""Every option in one place: command line first, then the ini file (or environment), then the default."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from .contracts import available
from .options import (
    DEFAULT_MARGIN,
    DEFAULT_SHUTDOWN_TIMEOUT,
    ENGINE_HOST_ENV,
    PASSWORD_ENV,
    PROTOCOLS,
    PULL_POLICIES,
    USERNAME_ENV,
    Credentials,
    RunOptions,
)
from .units import parse_duration


@dataclass(frozen=True)
class Option:
    flag: str
    ini: str | None  # None: command line only
    help: str
    kind: str = "value"  # "value", "list" (repeatable) or "flag"
    metavar: str | None = None
    env: str | None = None  # consulted after the command line and the ini file


OPTIONS: tuple[Option, ...] = (
    Option(
        "--model-image",
        "model_image",
        "image to check: a tag in the engine or a registry reference (repeatable)",
        "list",
        "REF",
    ),
    Option(
        "--model-tar", "model_tar", "`docker save` archive of an image to check (repeatable)", "list", "PATH"
    ),
    Option(
        "--model-yaml",
        "model_yaml",
        "the model's model.yaml (default: the one inside the image)",
        metavar="PATH",
    ),
    Option(
        "--model-data",
        "model_data",
        "the test cases: examples/<case>/ and validation-error/<case>/",
        metavar="DIR",
    ),
    Option(
        "--model-protocol",
        "model_protocol",
        "the contract's variant the image speaks: http (default) or grpc (model.yaml 0.4)",
        metavar="PROTOCOL",
    ),
    Option(
        "--status-timeout",
        "model_status_timeout",
        "time for /status to answer 200, e.g. 20s (default: model.yaml's)",
    ),
    Option("--run-timeout", "model_run_timeout", "time for one /run, e.g. 20s (default: model.yaml's)"),
    Option(
        "--shutdown-timeout",
        "model_shutdown_timeout",
        f"time for the process to exit after /shutdown (default {DEFAULT_SHUTDOWN_TIMEOUT:g}s)",
    ),
    Option(
        "--conformance-report",
        "model_report_dir",
        "directory for conformance.json and .html (default: ./reports)",
        metavar="DIR",
    ),
    Option(
        "--pull", "model_pull", "pull registry images: always, missing (default) or never", metavar="POLICY"
    ),
    Option(
        "--registry-username",
        "model_registry_username",
        f"registry user; the password comes from ${PASSWORD_ENV} or --registry-password-stdin",
        env=USERNAME_ENV,
    ),
    Option("--registry-password-stdin", None, "read the registry password from standard input", "flag"),
    Option("--keep-image", "model_keep_image", "keep images the harness pulled or loaded", "flag"),
    Option(
        "--timeout-margin",
        "model_timeout_margin",
        "share of each timeout that should be left, e.g. 50% (default) or 0.3; less is a warning",
        metavar="SHARE",
    ),
    Option(
        "--strict-rehearsal", "model_strict_rehearsal", "platform rehearsal warnings fail the image", "flag"
    ),
    Option(
        "--compare-bytes",
        "model_compare_bytes",
        "compare expected outputs byte for byte, also those declared JSON (default: as JSON values)",
        "flag",
    ),
    Option(
        "--rel-tol",
        "model_rel_tol",
        "relative tolerance for numbers in JSON outputs, e.g. 1e-6 (default 0: exact)",
        metavar="REL",
    ),
    Option(
        "--abs-tol",
        "model_abs_tol",
        "absolute tolerance for numbers in JSON outputs, e.g. 1e-9 (default 0: exact)",
        metavar="ABS",
    ),
    Option(
        "--engine-host",
        "model_engine_host",
        "host where the engine's published ports are reached "
        "(default: 127.0.0.1 for a local engine, else the host of DOCKER_HOST or of the docker context)",
        metavar="HOST",
        env=ENGINE_HOST_ENV,
    ),
)


def addoption(parser: pytest.Parser) -> None:
    # argparse expands %-formats in a help text: a bare "50%" would break `pytest --help`.
    def cli_help(option: Option) -> str:
        return option.help.replace("%", "%%")

    group = parser.getgroup(
        "model-conformance",
        "model container conformance (exit codes: 0 conformant, 1 nonconformant, 2 incomplete, "
        "4 usage error, 6 not evaluated; the contract: python -m harness contract)",
    )
    for option in OPTIONS:
        dest = option.ini or option.flag.lstrip("-").replace("-", "_")
        if option.kind == "list":
            group.addoption(
                option.flag,
                action="append",
                dest=dest,
                default=[],
                metavar=option.metavar,
                help=cli_help(option),
            )
            parser.addini(dest, option.help, type="linelist", default=[])
        elif option.kind == "flag":
            group.addoption(option.flag, action="store_true", dest=dest, default=False, help=cli_help(option))
            if option.ini:
                parser.addini(dest, option.help, type="bool", default=False)
        else:
            group.addoption(
                option.flag, dest=dest, default=None, metavar=option.metavar, help=cli_help(option)
            )
            parser.addini(dest, option.help, default="")


@dataclass(frozen=True)
class Settings:
    images: tuple[str, ...]
    tars: tuple[Path, ...]
    options: RunOptions
    report_dir: Path
    password_from_stdin: bool

    @property
    def active(self) -> bool:
        return bool(self.images or self.tars)


def _value(config: pytest.Config, option: Option) -> tuple[object, str]:
    """The raw value and a description of where it came from, for error messages."""
    dest = option.ini or option.flag.lstrip("-").replace("-", "_")
    cli = config.getoption(dest)
    if cli not in (None, [], False):
        return cli, option.flag
    if option.ini:
        raw = config.getini(option.ini)
        if raw not in ("", [], False):
            return (
                raw,
                f"ini key {option.ini} in {config.inipath}" if config.inipath else f"ini key {option.ini}",
            )
    if option.env and os.environ.get(option.env):
        return os.environ[option.env], f"${option.env}"
    return None, option.flag


def _path(config: pytest.Config, raw: str, source: str) -> Path:
    # Command-line paths are relative to where pytest was started, ini paths to the ini file.
    if source.startswith("--"):
        base = config.invocation_params.dir
    else:
        base = config.inipath.parent if config.inipath else config.rootpath
    return Path(raw) if Path(raw).is_absolute() else (base / raw).resolve()


def _host(raw: str, source: str) -> str:
    """A host name or address (IPv6 with or without brackets): no scheme, port or path."""
    host = raw.strip().removeprefix("[").removesuffix("]")
    try:
        if ":" in host:
            ipaddress.IPv6Address(host)
        elif not re.fullmatch(r"[A-Za-z0-9_.-]+", host):
            raise ValueError(host)
    except ValueError:
        raise pytest.UsageError(
            f"{source}: expected a host name or address (no scheme, port or path), got {raw!r}"
        ) from None
    return host


def _tolerance(raw: object, source: str) -> float:
    """A tolerance: a finite number >= 0 (0, the default, is exact)."""
    if raw is None:
        return 0.0
    text = str(raw).strip()
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise pytest.UsageError(f"{source}: expected a number >= 0 such as 1e-6, got {text[:40]!r}")
    return value


def resolve(config: pytest.Config, stdin_password: str | None = None) -> Settings:
    values = {option.flag: _value(config, option) for option in OPTIONS}

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

    pull, pull_source = values["--pull"]
    pull = str(pull or "missing").strip().lower()
    if pull not in PULL_POLICIES:
        raise pytest.UsageError(f"{pull_source}: expected one of {', '.join(PULL_POLICIES)}, got {pull!r}")

    from_stdin = bool(values["--registry-password-stdin"][0])
    username, username_source = values["--registry-username"]
    credentials = None
    if username:
        password = stdin_password if from_stdin else os.environ.get(PASSWORD_ENV)
        if not password:
            raise pytest.UsageError(
                f"{username_source} needs a password: "
                f"set ${PASSWORD_ENV} or pipe it to --registry-password-stdin"
            )
        credentials = Credentials(str(username), password)
    elif from_stdin:
        raise pytest.UsageError("--registry-password-stdin needs --registry-username")

    protocol_raw, protocol_source = values["--model-protocol"]
    protocol = str(protocol_raw or "http").strip().lower()
    if protocol not in PROTOCOLS:
        raise pytest.UsageError(
            f"{protocol_source}: expected one of {', '.join(PROTOCOLS)}, got {protocol[:40]!r}"
        )

    missing = available(protocol)
    if missing is not None:
        raise pytest.UsageError(f"{protocol_source}: {missing}")

    margin_raw, margin_source = values["--timeout-margin"]
    margin = DEFAULT_MARGIN
    if margin_raw is not None:
        text = str(margin_raw).strip()
        try:
            margin = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            margin = -1.0
        if not 0 <= margin < 1:
            raise pytest.UsageError(
                f"{margin_source}: expected a share such as 50% or 0.5, got {text[:40]!r}"
            )
    tolerances = {flag: _tolerance(*values[flag]) for flag in ("--rel-tol", "--abs-tol")}
    engine_host, engine_host_source = values["--engine-host"]
    if engine_host is not None:
        engine_host = _host(str(engine_host), engine_host_source)

    report_dir = path("--conformance-report") or config.invocation_params.dir / "reports"
    options = RunOptions(
        model_yaml=path("--model-yaml"),
        model_data=path("--model-data"),
        status_timeout=duration("--status-timeout"),
        run_timeout=duration("--run-timeout"),
        shutdown_timeout=duration("--shutdown-timeout") or DEFAULT_SHUTDOWN_TIMEOUT,
        pull=pull,
        credentials=credentials,
        keep_image=bool(values["--keep-image"][0]),
        compare_bytes=bool(values["--compare-bytes"][0]),
        margin=margin,
        strict=bool(values["--strict-rehearsal"][0]),
        engine_host=engine_host,
        rel_tol=tolerances["--rel-tol"],
        abs_tol=tolerances["--abs-tol"],
        tolerance_source=", ".join(values[f][1] for f, v in tolerances.items() if v) or "exact",
        report_dir=report_dir,
        protocol=protocol,
    )
    if report_dir.exists() and not report_dir.is_dir():
        raise pytest.UsageError(
            f"{values['--conformance-report'][1]}: {report_dir} is a file; give a directory for the reports"
        )
    if not (images or tars):
        given = [flag for flag in ("--model-data", "--model-yaml") if values[flag][0] is not None]
        if given:
            raise pytest.UsageError(
                f"{' and '.join(given)} given but no image: add --model-image REF or --model-tar FILE"
            )
    return Settings(images, tars, options, report_dir, from_stdin)
