"""The author's test cases, laid out as SPEC.md section 4 describes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import SetupError

EXAMPLES = "examples"
VALIDATION_ERRORS = "validation-error"
MESSAGE_FILE = "message.txt"


@dataclass(frozen=True)
class Case:
    kind: str  # EXAMPLES or VALIDATION_ERRORS
    name: str
    path: Path


def discover(data_dir: Path) -> list[Case]:
    """List the cases by directory name; their files are resolved once model.yaml is known."""
    if not data_dir.is_dir():
        raise SetupError(f"the test-case directory {data_dir} does not exist")
    cases = [
        Case(kind, entry.name, entry)
        for kind in (EXAMPLES, VALIDATION_ERRORS)
        if (data_dir / kind).is_dir()
        for entry in sorted((data_dir / kind).iterdir())
        if entry.is_dir()
    ]
    if not cases:
        raise SetupError(f"{data_dir} holds no {EXAMPLES}/<case>/ or {VALIDATION_ERRORS}/<case>/ directories")
    return cases


def find_file(case: Case, declared: str) -> Path | None:
    """The case's file for a declared name: exact, without its extension, or a directory of one file."""
    stem = declared.rsplit(".", 1)[0] if "." in declared.lstrip(".") else declared
    for candidate in dict.fromkeys((declared, stem)):
        path = case.path / candidate
        if path.is_file():
            return path
        if path.is_dir():
            files = [p for p in path.iterdir() if p.is_file()]
            if len(files) != 1:
                raise SetupError(f"case {case.kind}/{case.name}: {path} must hold exactly one file")
            return files[0]
    return None


def resolve_inputs(case: Case, inputs: tuple[str, ...]) -> dict[str, Path]:
    found = {name: find_file(case, name) for name in inputs}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise SetupError(f"case {case.kind}/{case.name} has no input file {', '.join(missing)}")
    return {name: path for name, path in found.items() if path is not None}


def expected_outputs(case: Case, outputs: tuple[str, ...]) -> dict[str, Path]:
    found = {name: find_file(case, name) for name in outputs}
    return {name: path for name, path in found.items() if path is not None}


def expected_message(case: Case) -> str:
    path = case.path / MESSAGE_FILE
    if not path.is_file():
        raise SetupError(f"case {case.kind}/{case.name} has no {MESSAGE_FILE}")
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(
            f"case {case.kind}/{case.name}: cannot read {MESSAGE_FILE} as UTF-8 ({exc})"
        ) from None
