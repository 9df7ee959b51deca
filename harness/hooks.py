"""The hooks the plugin offers to an author's conftest.py (registered by ``pytest_addhooks``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .compare import OutputVerdict


@pytest.hookspec(firstresult=True)
def pytest_model_compare_output(
    name: str, expected: bytes, actual: bytes, media_type: str, case_name: str, case_dir: Path
) -> OutputVerdict | tuple[bool, str] | None:
    """Compare one output of an example (``run.example[<case>]``) with its expected file.

    ``name`` is the output's declared name, ``expected`` the expected file's bytes,
    ``actual`` what the model wrote, ``media_type`` its declared ``mediaType`` ("" if none),
    ``case_name`` and ``case_dir`` the case (``examples/<case>/``, where a reference file of
    the author's own may be kept).

    Return None to leave the output to the harness's comparison (bytes, or JSON values), or
    a verdict: ``(passed, message)`` or ``harness.compare.OutputVerdict(passed, message)``.
    A failing verdict fails the check with its message. Called only for outputs the harness
    holds (up to their declared ``maxSize``, at most 32 MiB); larger ones are compared by
    their SHA-256 digest. The first implementation that returns a verdict decides.
    """
