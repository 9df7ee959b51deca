"""An example's expected output against what the model wrote (docs/contract.md#test-data).

Byte for byte, or as JSON values for outputs declared JSON (numbers within a tolerance
when one is given); an output too large to hold is compared by its SHA-256 digest; an
author's own comparison (the ``pytest_model_compare_output`` hook, given here as a plain
callable) decides first. Knows nothing of pytest.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .cases import tolerance_files
from .errors import SetupError
from .jobs import OUTPUT_KEEP, OutputFile

JSON = "application/json"
DIFF_LINES = 50  # the most lines of a structural or unified diff in a message
DIFF_LINE_CHARS = 200
TEXT_DIFF_BYTES = 2**20  # larger texts get no unified diff (difflib is quadratic at worst)
HOOK = "pytest_model_compare_output"
TOLERANCE_MAX = 64 * 1024  # a tolerance file is a few bytes: a larger one is refused, not read


@dataclass(frozen=True)
class OutputVerdict:
    """What an author's comparison decided: ``message`` says why (shown when it failed)."""

    passed: bool
    message: str = ""


class Comparator(Protocol):
    """The author's comparison: None leaves the output to the default comparison."""

    def __call__(
        self, *, name: str, expected: bytes, actual: bytes, media_type: str, case_name: str, case_dir: Path
    ) -> OutputVerdict | tuple[bool, str] | None: ...


@dataclass(frozen=True)
class Tolerance:
    """Numbers a and e are equal when |a - e| <= max(rel * max(|a|, |e|), abs) (math.isclose)."""

    rel: float = 0.0
    abs: float = 0.0
    source: str = "exact"  # where it was given: an option, a tolerance file, or "exact"

    def allows(self, difference: float, scale: float) -> bool:
        return difference <= max(self.rel * scale, self.abs)

    def describe(self) -> str:
        if self.rel == 0 and self.abs == 0:
            return "exact"
        return f"rel {self.rel:g}, abs {self.abs:g} ({self.source})"


@dataclass
class Mismatch:
    """Why an output is not what was expected, as a check's finding states it."""

    expected: str
    actual: str  # first line: the first difference; then details (a diff, capped)
    rule: str = "test-data"


@dataclass
class Outcome:
    """One output compared: how, and its mismatch if any (for the check's record)."""

    output: str
    method: str  # "bytes", "json", "digest" or "hook"
    mismatch: Mismatch | None = None
    record: dict[str, Any] = field(default_factory=dict)


def compare_output(
    name: str,
    path: Path,
    written: OutputFile,
    media_type: str,
    *,
    compare_bytes: bool,
    tolerance: Tolerance,
    comparator: Comparator | None = None,
    case_name: str = "",
    case_dir: Path | None = None,
) -> Outcome:
    """Compare one declared output, a regular file, with its expected file ``path``."""
    as_json = not compare_bytes and is_json(media_type)
    if written.content is None:
        return _by_digest(name, path, written, as_json)
    want = path.read_bytes()
    if comparator is not None:
        verdict = comparator(
            name=name,
            expected=want,
            actual=written.content,
            media_type=media_type,
            case_name=case_name,
            case_dir=case_dir if case_dir is not None else path.parent,
        )
        if verdict is not None:
            passed, message = _verdict(verdict)
            outcome = Outcome(name, "hook", record={"output": name, "method": "hook"})
            if message:
                outcome.record["message"] = message[:2000]
            if not passed:
                outcome.mismatch = Mismatch(
                    f"{name} accepted by the {HOOK} hook (conftest.py)",
                    message or "rejected, without a message",
                )
            return outcome
    if as_json:
        return _as_json(name, path, written.content, want, tolerance)
    outcome = Outcome(name, "bytes", record={"output": name, "method": "bytes"})
    if written.content != want:
        actual = first_difference(written.content, want)
        diff = text_diff(written.content, want)
        outcome.mismatch = Mismatch(f"{name} byte-equal to {path}", actual + (f"\n{diff}" if diff else ""))
    return outcome


def is_json(media_type: str) -> bool:
    return media_type == JSON or media_type.endswith("+json")


def _verdict(verdict: object) -> tuple[bool, str]:
    if isinstance(verdict, OutputVerdict):
        return verdict.passed, str(verdict.message)[:2000]
    if isinstance(verdict, tuple) and len(verdict) == 2 and isinstance(verdict[0], bool):
        return verdict[0], str(verdict[1])[:2000]
    raise SetupError(
        f"the {HOOK} hook returned {verdict!r:.100}: expected None, (passed, message) or an OutputVerdict"
    )


def _by_digest(name: str, path: Path, written: OutputFile, as_json: bool) -> Outcome:
    """An output over what the harness holds (32 MiB): its SHA-256, taken as it streamed by."""
    outcome = Outcome(name, "digest", record={"output": name, "method": "digest"})
    expected = f"{name} byte-equal to {path}" if not as_json else f"{name} equal to {path} as JSON"
    if written.sha256 is None:
        outcome.mismatch = Mismatch(
            expected, f"not compared: {written.size} bytes, more than the harness reads of an output"
        )
        return outcome
    size = path.stat().st_size
    want = sha256_of(path) if size == written.size else None
    if want == written.sha256:
        return outcome
    differs = (
        f"{written.size} bytes written, {size} expected"
        if want is None
        else f"SHA-256 {written.sha256[:16]}..., expected {want[:16]}..."
    )
    held = f"more than the {OUTPUT_KEEP // 2**20} MiB the harness holds"
    if as_json:
        actual = (
            f"{written.size} bytes, too large to compare as JSON ({held}), "
            f"and its bytes differ from the expected file's (compared by digest: {differs})"
        )
    else:
        actual = (
            f"its bytes differ (compared by SHA-256 digest, {written.size} bytes being {held}: {differs})"
        )
    outcome.mismatch = Mismatch(expected, actual)
    return outcome


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- JSON --------------------------------------------------------------------------------------


def _as_json(name: str, path: Path, content: bytes, want: bytes, tolerance: Tolerance) -> Outcome:
    try:
        expected = json.loads(want)
    except (ValueError, RecursionError):
        raise SetupError(f"the expected output {path} is not JSON, though {name} is declared JSON") from None
    record: dict[str, Any] = {"output": name, "method": "json", "tolerance": tolerance.describe()}
    outcome = Outcome(name, "json", record=record)
    try:
        actual = json.loads(content)
    except (ValueError, RecursionError):
        outcome.mismatch = Mismatch(f"{name} a JSON value", f"not JSON: {content[:100]!r}", "run-200")
        return outcome
    diff = JsonDiff(tolerance)
    try:
        diff.compare(actual, expected, "$")
    except RecursionError:
        outcome.mismatch = Mismatch(f"{name} equal to {path} as JSON", "too deeply nested to compare")
        return outcome
    record["maxDeviation"] = diff.max_abs
    record["maxRelativeDeviation"] = diff.max_rel
    if diff.worst is not None:
        record["maxDeviationAt"] = diff.worst
    if diff.count:
        outcome.mismatch = Mismatch(f"{name} equal to {path} as JSON", diff.message())
    return outcome


def json_difference(actual: Any, expected: Any, tolerance: Tolerance | None = None) -> str | None:
    """Where two JSON values first differ: ``$.label: expected "negative", got "neutral"``."""
    diff = JsonDiff(tolerance or Tolerance())
    diff.compare(actual, expected, "$")
    return diff.lines[0] if diff.lines else None


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value: Any) -> bool:
    return type(value) in (int, float)  # never a bool


class JsonDiff:
    """Every path where two JSON values differ (the first DIFF_LINES kept), and the largest
    deviation between the numbers compared."""

    def __init__(self, tolerance: Tolerance) -> None:
        self.tolerance = tolerance
        self.lines: list[str] = []
        self.count = 0
        self.numbers = 0
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.worst: str | None = None

    def differ(self, line: str) -> None:
        self.count += 1
        if len(self.lines) < DIFF_LINES:
            self.lines.append(line)

    def compare(self, actual: Any, expected: Any, where: str) -> None:
        if isinstance(expected, dict) and isinstance(actual, dict):
            for key in expected:
                if key not in actual:
                    self.differ(f"{where}.{key}: missing (expected {_show(expected[key])})")
                else:
                    self.compare(actual[key], expected[key], f"{where}.{key}")
            for key in actual:
                if key not in expected:
                    self.differ(f"{where}.{key}: not expected (got {_show(actual[key])})")
            return
        if isinstance(expected, list) and isinstance(actual, list):
            if len(actual) != len(expected):
                self.differ(f"{where}: expected {len(expected)} items, got {len(actual)}")
            for index, (a, e) in enumerate(zip(actual, expected, strict=False)):
                self.compare(a, e, f"{where}[{index}]")
            return
        if _number(actual) and _number(expected):
            self.compare_numbers(actual, expected, where)
            return
        if type(actual) is type(expected) and actual == expected:
            return
        self.differ(f"{where}: expected {_show(expected)}, got {_show(actual)}")

    def compare_numbers(self, actual: float, expected: float, where: str) -> None:
        self.numbers += 1
        if actual == expected or (actual != actual and expected != expected):  # NaN as written
            return
        try:
            difference = float(abs(actual - expected))
            scale = float(max(abs(actual), abs(expected)))
        except OverflowError:  # integers beyond floats: only equal ones are equal
            difference = scale = math.inf
        relative = difference / scale if scale and math.isfinite(difference) else math.inf
        if math.isfinite(difference) and difference > self.max_abs:
            self.max_abs, self.worst = difference, where
        if math.isfinite(relative):
            self.max_rel = max(self.max_rel, relative)
        if math.isfinite(difference) and self.tolerance.allows(difference, scale):
            return
        self.differ(
            f"{where}: expected {_show(expected)}, got {_show(actual)} "
            f"(off by {difference:.3g}, relative {relative:.3g})"
        )

    def message(self) -> str:
        """The first difference on the first line; then every one (capped), and the deviation."""
        lines = [self.lines[0]]
        summary = f"{self.count} difference{'s' if self.count != 1 else ''}"
        if self.max_abs or self.tolerance.describe() != "exact":
            summary += (
                f"; largest deviation {self.max_abs:.3g} (relative {self.max_rel:.3g})"
                + (f" at {self.worst}" if self.worst else "")
                + f"; tolerance {self.tolerance.describe()}"
            )
        if self.count == 1:  # the first line said it all
            return "\n".join([*lines, summary])
        lines.append(summary + ":")
        lines += [f"  {line[:DIFF_LINE_CHARS]}" for line in self.lines]
        if self.count > len(self.lines):
            lines.append(f"  ... and {self.count - len(self.lines)} more")
        return "\n".join(lines)


# -- bytes and text ----------------------------------------------------------------------------


def first_difference(actual: bytes, expected: bytes) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(actual, expected, strict=False)) if a != b),
        min(len(actual), len(expected)),
    )
    excerpt = actual[max(at - 20, 0) : at + 40]
    return f"differs from byte {at} ({len(actual)} bytes written, {len(expected)} expected): {excerpt!r}"


def text_diff(actual: bytes, expected: bytes) -> str:
    """A unified diff of two UTF-8 texts (capped), or "" for binary or large content."""
    if max(len(actual), len(expected)) > TEXT_DIFF_BYTES:
        return ""
    try:
        got, want = actual.decode("utf-8"), expected.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    lines = list(
        difflib.unified_diff(want.splitlines(), got.splitlines(), "expected", "written", lineterm="", n=2)
    )
    if not lines:  # the same lines: only line endings differ
        return "the same lines; their line endings differ"
    shown = [f"  {line[:DIFF_LINE_CHARS]}" for line in lines[:DIFF_LINES]]
    if len(lines) > DIFF_LINES:
        shown.append(f"  ... and {len(lines) - DIFF_LINES} more diff lines")
    return "\n".join(shown)


# -- tolerances --------------------------------------------------------------------------------


def tolerance_for(case_dir: Path, output: str, declared: tuple[str, ...], default: Tolerance) -> Tolerance:
    """The tolerance for one output of a case: ``<output>.tolerance.json`` beside its expected
    file, else the case's ``tolerance.json``, else the run's (``--rel-tol``, ``--abs-tol``)."""
    for name in tolerance_files(declared, output):
        if (case_dir / name).is_file():
            return read_tolerance(case_dir / name)
    return default


def read_tolerance(path: Path) -> Tolerance:
    def bad(why: str) -> SetupError:
        return SetupError(f'{path}: {why}; expected e.g. {{"rel": 1e-6, "abs": 0}}')

    try:
        with path.open("rb") as stream:
            text = stream.read(TOLERANCE_MAX + 1)
        if len(text) > TOLERANCE_MAX:
            raise bad(f"larger than {TOLERANCE_MAX // 1024} KiB")
        data = json.loads(text)
    except (OSError, ValueError, RecursionError) as exc:
        raise bad(f"not readable as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise bad("not a JSON object")
    unknown = sorted(set(data) - {"rel", "abs"})
    if unknown:
        raise bad(f"unknown key {unknown[0]!r}")
    values = {}
    for key in ("rel", "abs"):
        value = data.get(key, 0)
        if not _number(value) or not math.isfinite(value) or value < 0:
            raise bad(f"{key} must be a number >= 0, not {json.dumps(value)[:40]}")
        values[key] = float(value)
    return Tolerance(values["rel"], values["abs"], str(path.name))


# -- outputs kept for the author ---------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(name: str) -> str:
    """A file name made of safe characters, never hidden, ``.`` or ``..``; distinct names stay
    distinct (a hash of the original when it had to change)."""
    safe = _UNSAFE.sub("_", name)[:80]
    if safe.startswith("."):
        safe = "_" + safe[1:]
    if safe != name:
        safe += "-" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return safe or "_"


def keep_outputs(
    report_dir: Path, parts: Sequence[str], outputs: dict[str, OutputFile]
) -> tuple[list[str], list[str]]:
    """Write the outputs the model wrote that the harness holds under ``report_dir/outputs/
    <parts...>/``: their paths relative to ``report_dir``, and what could not be kept.

    Nothing there is followed: each directory is opened without following links, and each
    file is created anew (an earlier run's file is replaced; a link there is refused).
    """
    kept: list[str] = []
    problems: list[str] = []
    folders = ["outputs", *(safe_name(p) for p in parts)]
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(report_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return kept, [f"cannot write to {report_dir}: {exc.strerror}"]
    try:
        for folder in folders:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o755, dir_fd=fd)
            inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        for name, written in outputs.items():
            if written.content is None:
                if written.kind == "file":
                    problems.append(f"{name}: {written.size} bytes, more than the harness holds")
                continue
            file_name = safe_name(name)
            try:
                _write_fresh(fd, file_name, written.content)
            except OSError as exc:
                problems.append(f"{name}: {exc.strerror or exc}")
                continue
            kept.append("/".join([*folders, file_name]))
    except OSError as exc:
        problems.append(f"cannot make {'/'.join(folders)} in {report_dir}: {exc.strerror or exc}")
    finally:
        os.close(fd)
    return kept, problems


def _write_fresh(dir_fd: int, name: str, content: bytes) -> None:
    try:
        found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(found.st_mode):
            raise OSError(0, "something other than a regular file is there; left alone")
        os.unlink(name, dir_fd=dir_fd)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as stream:
        stream.write(content)
