"""Ctrl-C at a random moment of a harness run: it must never be lost.

    python benchmarks/interrupts.py --runs N [--cold] [--parallel 2] [--length S] [--deadline S]

Starts at most N harness runs of a model that is ready only after about 8 s
(``psc-samples/langid-slow-start``, built if missing), --parallel at a time, each in a
temporary directory of its own with its own ``[pytest]`` ini (as the Makefile's demo), and
sends each SIGINT at a random moment between 0.1 s and the run's typical length (measured
by one run first, unless --length). With --cold each run gets a fresh, empty
``PYTHONPYCACHEPREFIX``: every module is compiled as right after an install.

Prints: the runs, those signalled before they ended, those that exited 0 after a signal,
those whose JSON verdict was ``conformant`` and those whose report does not say the run
was interrupted, after a signal (all must be none; a signal that came after the report was
written, during the last cleanup, is counted apart: the verdict was final by then), runs
that missed their deadline, and the containers the runs left (none). Exits 1 when any of
these is not as it must be.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.labels import OWNER_LABEL, owner_token  # noqa: E402
from sample_models import build  # noqa: E402

IMAGE = "psc-samples/langid-slow-start:latest"
DATA = build.HERE / "langid" / "data"


@dataclass
class Outcome:
    returncode: int | None  # None: killed at its deadline
    signalled_at: float | None  # seconds after the start; None: it ended before its moment
    verdict: str | None
    interrupted: str | None
    report_before_signal: bool  # the report was written before the signal was sent
    left: list[str]
    seconds: float
    pid: int


def harness_run(
    python: str, cold: bool, signal_after: float | None, deadline: float, keep: Path | None = None
) -> Outcome:
    workdir = Path(tempfile.mkdtemp(prefix="psc-interrupts-"))
    try:
        (workdir / "pytest.ini").write_text("[pytest]\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PSC_"))}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if cold:
            env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
        command = [
            python,
            *("-m", "pytest", "-p", "no:cacheprovider"),
            *("--model-image", IMAGE, f"--model-data={DATA}", "--conformance-report=report"),
        ]
        report = workdir / "report" / "conformance.json"
        began = time.monotonic()
        with (workdir / "out.txt").open("wb") as out:
            process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
            owner = owner_token(process.pid)  # read at once: the process's own start ticks
            signalled_at = None
            before = False
            try:
                if signal_after is not None:
                    try:
                        process.wait(signal_after)
                    except subprocess.TimeoutExpired:
                        before = report.exists()
                        process.send_signal(signal.SIGINT)
                        signalled_at = time.monotonic() - began
                try:
                    code: int | None = process.wait(max(deadline - (time.monotonic() - began), 1.0))
                except subprocess.TimeoutExpired:
                    code = None
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        seconds = time.monotonic() - began
        verdict = interrupted = None
        if report.exists():
            document = json.loads(report.read_text())
            verdict, interrupted = document.get("verdict"), document.get("interrupted")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(workdir / "out.txt", keep / f"{process.pid}.txt")
            if report.exists():
                shutil.copy(report, keep / f"{process.pid}.json")
        return Outcome(
            code, signalled_at, verdict, interrupted, before, leftovers(owner), seconds, process.pid
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def leftovers(owner: str) -> list[str]:
    """The containers a run left (its own, by its owner label), removed once counted."""
    client = docker.from_env()
    try:
        found = client.api.containers(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})
        for summary in found:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(summary["Id"], force=True, v=True)
        return [(s.get("Names") or [s["Id"][:12]])[0].lstrip("/") for s in found]
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, required=True, help="at most this many runs")
    parser.add_argument("--cold", action="store_true", help="a fresh PYTHONPYCACHEPREFIX for each run")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--length", type=float, help="the typical length of a run (default: measured)")
    parser.add_argument("--deadline", type=float, default=180.0, help="seconds a run may take (default 180)")
    parser.add_argument("--seed", type=int, help="for the random moments")
    parser.add_argument("--keep", type=Path, help="keep each run's output and report here, by its pid")
    args = parser.parse_args()
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        subprocess.run(
            [sys.executable, "-m", "sample_models.build", "langid-slow-start"], cwd=ROOT, check=True
        )
    python = sys.executable
    length = args.length
    if length is None:
        calibration = harness_run(python, args.cold, None, args.deadline)
        if (
            calibration.returncode != 0
        ):  # a loaded machine may make the model late: its length counts all the same
            print(f"note: the run without a signal exited {calibration.returncode}", file=sys.stderr)
        length = calibration.seconds
    chance = random.Random(args.seed)
    moments = [chance.uniform(0.1, length) for _ in range(args.runs)]
    done = 0
    lock = threading.Lock()

    def one(moment: float) -> tuple[float, Outcome]:
        nonlocal done
        outcome = harness_run(python, args.cold, moment, args.deadline, args.keep)
        with lock:
            done += 1
            print(
                f"[{done}/{args.runs}] pid {outcome.pid}: signal at {moment:.2f} s"
                f" ({'sent' if outcome.signalled_at is not None else 'after its end'}):"
                f" exit {outcome.returncode}, verdict {outcome.verdict}, {outcome.seconds:.1f} s"
                + (f", LEFT {outcome.left}" if outcome.left else ""),
                flush=True,
            )
        return moment, outcome

    with ThreadPoolExecutor(max(args.parallel, 1)) as pool:
        results = list(pool.map(one, moments))
    outcomes = [o for _, o in results]
    signalled = [o for o in outcomes if o.signalled_at is not None]
    in_run = [o for o in signalled if not o.report_before_signal]
    late = [o for o in signalled if o.report_before_signal]
    exit0 = [o for o in in_run if o.returncode == 0]
    conformant = [o for o in in_run if o.verdict == "conformant"]
    # A report that says nothing of the interruption: the run went on as if it had not come.
    unnoticed = [o for o in in_run if o.verdict is not None and not o.interrupted]
    hung = [o for o in outcomes if o.returncode is None]
    left = [name for o in outcomes for name in o.left]
    late_codes = sorted({o.returncode for o in late}, key=str)
    print(f"cache: {'cold' if args.cold else 'warm'}; typical run {length:.1f} s; runs {len(outcomes)}")
    print(
        f"signalled before they ended: {len(signalled)}"
        f" ({len(late)} after the report was written, exit {late_codes})"
    )
    print(f"exited 0 after a signal: {len(exit0)}")
    print(f"JSON verdict conformant after a signal: {len(conformant)}")
    print(f"reports that do not say the run was interrupted, after a signal: {len(unnoticed)}")
    print(f"missed their deadline of {args.deadline:g} s: {len(hung)}")
    print(f"containers left: {len(left)} {left if left else ''}".rstrip())
    return 1 if exit0 or conformant or unnoticed or hung or left else 0


if __name__ == "__main__":
    sys.exit(main())
