"""The author's test cases, laid out as model authors already keep them (docs/contract.md#test-data).

``examples/<case>/`` (or ``example/<case>/``) holds input files and expected outputs;
``validation-error/<case>/`` holds input files and ``message.txt`` (or ``message``). A file
is found by its exact name, else by its name without extension on both sides
(``image.png`` for a declared ``image``, ``input.dat`` for ``input.txt``), or as a
directory of that name holding exactly one file; two candidates are an error, never a guess.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import SetupError

EXAMPLES = "examples"
VALIDATION_ERRORS = "validation-error"
MESSAGE_FILE = "message.txt"
ENTRIES_MAX = 10_000  # entries of one case directory looked at: test data is small
# An example's numeric tolerances (harness/compare.py): never taken for an input or output.
TOLERANCE_FILE = "tolerance.json"
TOLERANCE_SUFFIX = ".tolerance.json"
# The directory names of each kind, as the vendor's template and its models use them.
LAYOUTS = {EXAMPLES: ("examples", "example"), VALIDATION_ERRORS: ("validation-error",)}


@dataclass(frozen=True)
class Case:
    kind: str  # EXAMPLES or VALIDATION_ERRORS
    name: str
    path: Path


@dataclass(frozen=True)
class Found:
    cases: list[Case]
    missing_kinds: list[str]  # kinds with no case: their checks are skipped, and the run says so


def discover(data_dir: Path) -> Found:
    """List the cases by directory name; their files are resolved once model.yaml is known.

    Refused here, before anything is read: the same case name under two layouts of a kind
    (their checks would share one id), and anything that is not a regular file or a
    directory (a FIFO would block its reader, a device never end).
    """
    if not data_dir.is_dir():
        raise SetupError(f"the test-case directory {data_dir} does not exist")
    cases: list[Case] = []
    missing: list[str] = []
    for kind, names in LAYOUTS.items():
        of_kind: dict[str, Case] = {}
        for layout in names:
            if not (data_dir / layout).is_dir():
                continue
            for entry in sorted((data_dir / layout).iterdir()):
                if not entry.is_dir():
                    continue
                earlier = of_kind.get(entry.name)
                if earlier is not None:
                    raise SetupError(
                        f"{data_dir}: {earlier.path.parent.name}/{entry.name}/ and {layout}/{entry.name}/ "
                        f"are both the case {entry.name!r}, whose checks would share one id: keep one"
                    )
                case = Case(kind, entry.name, entry)
                _only_files_and_directories(case)
                of_kind[entry.name] = case
        cases += of_kind.values()
        if not of_kind:
            missing.append(kind)
    if not cases:
        raise SetupError(
            f"{data_dir} holds no test case: expected examples/<case>/ (or example/<case>/) "
            "and validation-error/<case>/ directories"
        )
    return Found(cases, missing)


def _only_files_and_directories(case: Case) -> None:
    """Every entry of the case (and of its one-file directories) a regular file or a directory."""
    pending = [case.path]
    seen = 0
    while pending:
        directory = pending.pop()
        for entry in directory.iterdir():
            seen += 1
            if seen > ENTRIES_MAX:
                raise SetupError(f"case {case.kind}/{case.name} holds more than {ENTRIES_MAX} entries")
            try:
                mode = os.stat(entry).st_mode  # a link is judged by what it points at
            except OSError as exc:
                raise SetupError(f"case {case.kind}/{case.name}: cannot read {entry.name}: {exc}") from None
            if stat.S_ISDIR(mode) and directory == case.path:
                pending.append(entry)
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                where = entry.relative_to(case.path)
                raise SetupError(
                    f"case {case.kind}/{case.name}: {where} is {_kind_of(mode)}, not a regular file"
                )


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def find_file(case: Case, declared: str, reserved: frozenset[str] = frozenset()) -> Path | None:
    """The case's file for a declared name: exact, else extension ignored on both sides.

    ``reserved`` are the other declared names: a file named exactly after one of them is
    never taken for this one.
    """
    exact = case.path / declared
    if exact.exists():
        return _single(case, exact)
    candidates = [
        entry
        for entry in sorted(case.path.iterdir())
        if entry.name not in reserved and stem(entry.name) == stem(declared)
    ]
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise SetupError(f"case {case.kind}/{case.name}: {names} could each be {declared}; keep one")
    return _single(case, candidates[0]) if candidates else None


def _single(case: Case, path: Path) -> Path:
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file()]
        if len(files) != 1:
            raise SetupError(f"case {case.kind}/{case.name}: {path.name}/ must hold exactly one file")
        return files[0]
    return path


def tolerance_files(declared: tuple[str, ...], output: str | None = None) -> tuple[str, ...]:
    """The names of an example's tolerance files (of one output, or of all), but those a
    declared input or output could be (``tolerance.json`` for a declared ``tolerance``)."""
    names = (*((output,) if output else declared), "")
    candidates = [n + TOLERANCE_SUFFIX for n in names if n] + [TOLERANCE_FILE]
    stems = {stem(name) for name in declared}
    return tuple(c for c in candidates if c not in declared and stem(c) not in stems)


def resolve_inputs(case: Case, inputs: tuple[str, ...], outputs: tuple[str, ...] = ()) -> dict[str, Path]:
    reserved = frozenset((*inputs, *outputs, MESSAGE_FILE, *tolerance_files((*inputs, *outputs))))
    found = {name: find_file(case, name, reserved - {name}) for name in inputs}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise SetupError(f"case {case.kind}/{case.name} has no input file {', '.join(missing)}")
    return {name: path for name, path in found.items() if path is not None}


def expected_outputs(case: Case, outputs: tuple[str, ...], inputs: tuple[str, ...] = ()) -> dict[str, Path]:
    reserved = frozenset((*inputs, *outputs, *tolerance_files((*inputs, *outputs))))
    found = {name: find_file(case, name, reserved - {name}) for name in outputs}
    return {name: path for name, path in found.items() if path is not None}


def expected_message(case: Case, inputs: tuple[str, ...] = ()) -> str:
    path = find_file(case, MESSAGE_FILE, frozenset(inputs))
    if path is None:
        raise SetupError(f"case {case.kind}/{case.name} has no {MESSAGE_FILE} (or message)")
    try:
        message = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"case {case.kind}/{case.name}: cannot read {path.name} as UTF-8 ({exc})") from None
    if not message:
        # An empty text is in every message: the case would pass whatever the model said.
        raise SetupError(
            f"case {case.kind}/{case.name}: {path.name} is empty; write the text the 422 message must contain"
        )
    return message
