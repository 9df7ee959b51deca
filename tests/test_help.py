"""``pytest --help`` wherever the harness is installed: its plugin loads through its entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.settings import OPTIONS


def test_pytest_help_lists_the_options_and_exit_codes(tmp_path: Path) -> None:
    # Any project's directory: its own (empty) configuration, not this repository's.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    help_text = " ".join(done.stdout.split())  # argparse wraps lines
    assert "model container conformance (exit codes: 0 conformant, 1 nonconformant, 2 incomplete" in help_text
    for option in OPTIONS:
        assert option.flag in help_text
        # Every help text shown as written, a "%" included.
        assert " ".join(option.help.split())[:40] in help_text, option.flag
    # The ini keys are listed too, with their help.
    for option in OPTIONS:
        if option.ini:
            assert option.ini in help_text
