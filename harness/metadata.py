"""model.yaml (specification 0.3): read, validate, and turn into numbers Docker can use."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

from .errors import SetupError
from .units import parse_duration, parse_size

MIN_MEMORY = 6 * 2**20  # the least memory limit Docker accepts


@cache
def schema(name: str) -> dict[str, Any]:
    """A JSON schema from ``schemas/`` (shipped inside the package)."""
    text = resources.files("harness").joinpath("schemas", name).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    memory_bytes: int
    cpu_count: float
    status_timeout: float
    run_timeout: float
    source: str  # where it was read from, for messages and the report


def parse_metadata(text: str, source: str) -> ModelMetadata:
    """Validate a model.yaml's text; any problem is a SetupError naming ``source``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise SetupError(f"{source} is not valid YAML{at}") from None
    validator = jsonschema.Draft202012Validator(schema("model.schema.json"))
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise SetupError(f"{source}: {path}: {error.message}")
    try:
        memory = parse_size(data["resources"]["memory"]["size"])
        status_timeout = parse_duration(data["timeout"]["status"])
        run_timeout = parse_duration(data["timeout"]["run"])
    except ValueError as exc:
        raise SetupError(f"{source}: {exc}") from None
    if memory < MIN_MEMORY:
        raise SetupError(
            f"{source}: resources.memory.size: {memory} bytes is below Docker's minimum of 6 MiB"
        )
    return ModelMetadata(
        name=str(data["name"]),
        version=str(data["version"]),
        inputs=tuple(data["inputs"]),
        outputs=tuple(data["outputs"]),
        memory_bytes=memory,
        cpu_count=float(data["resources"]["cpu"]["count"]),
        status_timeout=status_timeout,
        run_timeout=run_timeout,
        source=source,
    )
