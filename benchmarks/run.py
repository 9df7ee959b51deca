"""Benchmarks of the harness against the floor set by Docker and the model.

    python benchmarks/run.py [--runs 5] [--only overhead,remote,readiness,tar,import,many]
        [--testcontainers-python PATH] [--baseline-python PATH]

Prints a table and writes reports/benchmark.json. Every figure is the median of --runs
runs, alternating the contenders so that drift on the machine hits both alike.

- overhead: a whole run of the langid sample, less the floor script (floor.py), on the
  local engine; with --baseline-python (the Python of another checkout's environment, e.g.
  main's), that checkout's run is a third contender: before and after in one sitting.
- remote: the same on the second engine of tests/second_engine.py (needs root), which
  cannot see the harness's files: the run's archive calls counted, and its overhead over
  the floor less the engine's own cost of those calls (a bare PUT and GET, measured there).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.dockerengine.images import read_tar_manifest  # noqa: E402
from sample_models import build  # noqa: E402

DATA = build.HERE / "langid" / "data"
PY = sys.executable
READY = re.compile(r"can answer 200 from (\S+)")
BIG_TAG = "psc-bench/big:latest"
BIG_TAR = ROOT / "build" / "bench" / "big.tar"
HARNESS = [PY, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
LOCAL_ENV = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
# A plugin the remote runs load: it counts the run's archive calls, without changing them.
COUNTER = """
import atexit, json, os
from harness.dockerengine import calls

counted = {"put": 0, "get": 0}

def counting(kind, call):
    def counted_call(*args, **kwargs):
        counted[kind] += 1
        return call(*args, **kwargs)
    return counted_call

calls.put_archive = counting("put", calls.put_archive)
calls.read_archive = counting("get", calls.read_archive)
atexit.register(lambda: open(os.environ["PSC_BENCH_CALLS"], "w").write(json.dumps(counted)))
"""


def timed(
    command: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    began = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900
    )
    return time.perf_counter() - began, done


def alternate(runs: int, contenders: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, measure in contenders.items():
            results[name].append(measure())
    return results


def med(values: list[float]) -> float:
    return statistics.median(values)


def harness_run(
    work: Path, python: str = PY, env: dict[str, str] | None = None, extra: tuple[str, ...] = ()
) -> Callable[[], float]:
    """One whole run of the conformant sample (``python``: another checkout's environment)."""

    def measure() -> float:
        took, done = timed(
            [
                python,
                *HARNESS[1:],
                *extra,
                "--model-image",
                build.CONFORMANT.tag,
                f"--model-data={DATA}",
                "--conformance-report=out",
            ],
            work,
            env,
        )
        assert done.returncode == 0, done.stdout[-2000:]
        return took

    return measure


def floor_run(work: Path, env: dict[str, str] | None = None) -> Callable[[], float]:
    def measure() -> float:
        took, done = timed(
            [PY, str(ROOT / "benchmarks" / "floor.py"), build.CONFORMANT.tag, str(DATA)], work, env
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return took

    return measure


def overhead(runs: int, work: Path, baseline_python: str | None) -> dict[str, Any]:
    contenders = {"floor": floor_run(work), "harness": harness_run(work)}
    if baseline_python:  # its own checkout, its bytecode left as it is
        contenders["baseline"] = harness_run(work, baseline_python, {"PYTHONDONTWRITEBYTECODE": "1"})
    seen = alternate(runs, contenders)
    found: dict[str, Any] = {
        "floorSeconds": med(seen["floor"]),
        "harnessSeconds": med(seen["harness"]),
        "ratio": med(seen["harness"]) / med(seen["floor"]),
        "overheadSeconds": med(seen["harness"]) - med(seen["floor"]),
        "target": 0.4,
        "runs": seen,
    }
    if baseline_python:
        found["baselineSeconds"] = med(seen["baseline"])
        found["baselineOverheadSeconds"] = med(seen["baseline"]) - med(seen["floor"])
        found["baselinePython"] = baseline_python
    return found


def archive_floor(client: docker.DockerClient, count: int = 10) -> tuple[float, float]:
    """The engine's own cost of one PUT and one GET of its archive endpoint (bare SDK, medians)."""
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as archive:
        info = tarfile.TarInfo("psc-floor/in/input.txt")
        content = b"Bonjour tout le monde, ceci est un petit texte.\n"
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    container = client.containers.run(
        build.CONFORMANT.tag, detach=True, environment={"PSC_MODEL_PORT": "23456"}, mem_limit=256 * 2**20
    )
    puts: list[float] = []
    gets: list[float] = []
    try:
        for _ in range(count):
            began = time.perf_counter()
            container.put_archive("/", body.getvalue())
            puts.append(time.perf_counter() - began)
            began = time.perf_counter()
            chunks, _stat = container.get_archive("/psc-floor/in/input.txt")
            b"".join(chunks)
            gets.append(time.perf_counter() - began)
    finally:
        container.remove(force=True, v=True)
    return med(puts), med(gets)


def remote(runs: int, work: Path, baseline_python: str | None) -> dict[str, Any]:
    """The overhead on the second engine, over the floor and the engine's cost of the run's file calls."""
    from tests import second_engine

    why = second_engine.unavailable()
    if why is not None:
        return {"skipped": why}
    local = docker.from_env(version="auto", environment=LOCAL_ENV)
    (work / "psc_bench_calls.py").write_text(COUNTER)
    with second_engine.second_engine() as engine2:
        engine2.load(local, [build.CONFORMANT.tag])

        def counted(name: str, python: str = PY) -> Callable[[], float]:
            env = engine2.env(PYTHONPATH=str(work), PSC_BENCH_CALLS=str(work / f"{name}-calls.json"))
            if python != PY:
                env["PYTHONDONTWRITEBYTECODE"] = "1"
            return harness_run(work, python, env, ("-p", "psc_bench_calls"))

        contenders = {"floor": floor_run(work, engine2.env()), "harness": counted("harness")}
        if baseline_python:
            contenders["baseline"] = counted("baseline", baseline_python)
        seen = alternate(runs, contenders)
        client = engine2.client()
        put_seconds, get_seconds = archive_floor(client)
        client.close()
    local.close()
    found: dict[str, Any] = {
        "floorSeconds": med(seen["floor"]),
        "putSeconds": put_seconds,
        "getSeconds": get_seconds,
        "target": 0.2,
        "targetCalls": "1 input copy and 1 output read per phase or battery",
        "runs": seen,
    }
    for name in contenders.keys() - {"floor"}:
        calls = json.loads((work / f"{name}-calls.json").read_text())
        over = med(seen[name]) - med(seen["floor"])
        found[name] = {
            "seconds": med(seen[name]),
            "archivePuts": calls["put"],
            "archiveGets": calls["get"],
            "overheadSeconds": over,
            "overheadBeyondCallsSeconds": over - calls["put"] * put_seconds - calls["get"] * get_seconds,
        }
    return found


def readiness(
    runs: int, work: Path, testcontainers_python: str | None, baseline_python: str | None
) -> dict[str, Any]:
    image = "psc-samples/langid-slow-start:latest"
    (work / "test_ready_log.py").write_text(
        "from pathlib import Path\n\nimport docker\n\n"
        "def test_keep_ready_log(model_server):\n"
        "    logs = docker.from_env(version='auto').containers.get(model_server.container_id).logs()\n"
        "    Path('ready.log').write_bytes(logs)\n"
    )

    def latency(python: str) -> float:
        _, done = timed(
            [
                python,
                *HARNESS[1:],
                "--model-image",
                image,
                "--conformance-report=out",
                "-k",
                "status.ready or keep_ready_log",
            ],
            work,
        )
        # 2: pytest's "interrupted", the harness's code for a battery with checks deselected.
        assert done.returncode == 2 and "2 passed" in done.stdout, done.stdout[-2000:]
        report = json.loads((work / "out" / "conformance.json").read_text())
        ready_step = next(s for s in report["loadSteps"] if s["stepName"] == "Ready")
        declared = datetime.fromisoformat(ready_step["startedAt"]).timestamp()
        match = READY.search((work / "ready.log").read_text())
        assert match
        return declared - datetime.fromisoformat(match[1]).timestamp()

    contenders = {"harness": lambda: latency(PY)}
    if baseline_python:
        contenders["baseline"] = lambda: latency(baseline_python)
    if testcontainers_python:

        def testcontainers() -> float:
            _, done = timed(
                [testcontainers_python, str(ROOT / "benchmarks" / "readiness_testcontainers.py"), image],
                work,
                env={"TESTCONTAINERS_RYUK_DISABLED": "true"},
            )
            assert done.returncode == 0, done.stderr[-2000:]
            return float(done.stdout.strip().splitlines()[-1])

        contenders["testcontainers"] = testcontainers
    seen = alternate(runs, contenders)
    figures: dict[str, Any] = {f"{name}Seconds": med(values) for name, values in seen.items()}
    return {**figures, "target": 0.1, "runs": seen}


def big_image(client: docker.DockerClient) -> None:
    """Base image plus 1 GiB of random bytes, saved once to build/bench/big.tar."""
    if BIG_TAR.exists():
        return
    BIG_TAR.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text(
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN head -c 1073741824 /dev/urandom > /blob\n"
        )
        client.images.build(
            path=context, tag=BIG_TAG, buildargs={"BASE_IMAGE": build.base_tag()}, pull=False, rm=True
        )
    partial = BIG_TAR.with_suffix(".partial")
    with partial.open("wb") as out:
        for chunk in client.images.get(BIG_TAG).save(named=True):
            out.write(chunk)
    partial.replace(BIG_TAR)


LOADER = """
import resource, sys, time
from pathlib import Path
import docker
from harness.dockerengine import images
client = docker.from_env(version="auto")
manifest = images.read_tar_manifest(Path(sys.argv[1]))
began = time.perf_counter()
images.verify_tar(manifest)  # what a run does first: the archive's digests
images.load_tar(client, manifest)
took = time.perf_counter() - began
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def tar_load(runs: int, work: Path) -> dict[str, Any]:
    client = docker.from_env(version="auto")
    big_image(client)
    (image_id,) = read_tar_manifest(BIG_TAR).image_ids
    peaks: list[float] = []

    def absent() -> None:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image_id, force=True)

    def cli() -> float:
        absent()
        took, done = timed(["docker", "load", "-i", str(BIG_TAR)], work)
        assert done.returncode == 0, done.stderr
        return took

    def harness() -> float:
        absent()
        _, done = timed([PY, "-c", LOADER, str(BIG_TAR)], work)
        assert done.returncode == 0, done.stderr[-2000:]
        took, peak_kib = done.stdout.split()
        peaks.append(int(peak_kib) / 1024)
        return float(took)

    seen = alternate(runs, {"cli": cli, "harness": harness})
    absent()
    return {
        "tarBytes": BIG_TAR.stat().st_size,
        "cliSeconds": med(seen["cli"]),
        "harnessSeconds": med(seen["harness"]),
        "ratio": med(seen["harness"]) / med(seen["cli"]),
        "targetRatio": 1.1,
        "harnessPeakRssMiB": max(peaks),
        "targetPeakRssMiB": 100,
        "runs": seen,
    }


def import_cost(runs: int, work: Path) -> dict[str, Any]:
    empty = work / "empty"
    empty.mkdir(exist_ok=True)

    def collect(*extra: str) -> Callable[[], float]:
        def measure() -> float:
            took, done = timed(
                [PY, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *extra], empty
            )
            assert done.returncode == 5, done.stdout  # no tests: exactly what is measured
            return took

        return measure

    seen = alternate(runs * 2, {"without": collect("-p", "no:model_conformance"), "with": collect()})
    extra = med(seen["with"]) - med(seen["without"])
    return {
        "withSeconds": med(seen["with"]),
        "withoutSeconds": med(seen["without"]),
        "extraSeconds": extra,
        "target": 0.15,
        "runs": seen,
    }


def many(runs: int, work: Path) -> dict[str, Any]:
    names = [
        build.CONFORMANT.tag,
        *(
            f"psc-samples/{n}:latest"
            for n in ("broken-status-html", "broken-run-no-output", "broken-status-no-statuscode")
        ),
    ]

    def battery(count: int) -> Callable[[], float]:
        def measure() -> float:
            images = [arg for name in names[:count] for arg in ("--model-image", name)]
            took, done = timed(
                [
                    *HARNESS,
                    "-n",
                    str(count),
                    "--dist",
                    "loadgroup",
                    *images,
                    f"--model-data={DATA}",
                    "--conformance-report=out",
                ],
                work,
            )
            assert done.returncode in (0, 1), done.stdout[-2000:]
            return took / count

        return measure

    seen = alternate(runs, {f"{n} image{'s' if n > 1 else ''}": battery(n) for n in (1, 2, 4)})
    return {"secondsPerImage": {name: med(values) for name, values in seen.items()}, "runs": seen}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="overhead,remote,readiness,tar,import,many")
    parser.add_argument("--testcontainers-python", default=os.environ.get("PSC_BENCH_TESTCONTAINERS_PYTHON"))
    parser.add_argument("--baseline-python", help="the Python of another checkout's environment, compared")
    args = parser.parse_args()
    if args.testcontainers_python:  # the benchmarks run in other directories
        args.testcontainers_python = os.path.abspath(args.testcontainers_python)
    chosen = args.only.split(",")
    client = docker.from_env(version="auto")
    build.build_all(client)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "engine": client.version()["Version"],
        },
        "runs": args.runs,
    }
    with tempfile.TemporaryDirectory(prefix="psc-bench-") as tmp:
        work = Path(tmp)
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "overhead": lambda: overhead(args.runs, work, args.baseline_python),
            "remote": lambda: remote(args.runs, work, args.baseline_python),
            "readiness": lambda: readiness(args.runs, work, args.testcontainers_python, args.baseline_python),
            "tar": lambda: tar_load(args.runs, work),
            "import": lambda: import_cost(args.runs, work),
            "many": lambda: many(args.runs, work),
        }
        for name in chosen:
            print(f"benchmark: {name} ...", flush=True)
            results[name] = steps[name]()
    out = ROOT / "reports" / "benchmark.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"written to {out.relative_to(ROOT)}")
    return 0


def print_table(results: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    if "overhead" in results:
        r = results["overhead"]
        rows.append(
            (
                "local engine: harness - floor",
                f"{r['harnessSeconds']:.2f} s - {r['floorSeconds']:.2f} s = {r['overheadSeconds']:.2f} s",
                f"<= {r['target']} s",
            )
        )
        if "baselineSeconds" in r:
            rows.append(
                (
                    "local engine: baseline - floor",
                    f"{r['baselineSeconds']:.2f} s - {r['floorSeconds']:.2f} s = "
                    f"{r['baselineOverheadSeconds']:.2f} s",
                    "(comparison)",
                )
            )
    if "remote" in results:
        r = results["remote"]
        if "skipped" in r:
            rows.append(("second engine", f"not measured: {r['skipped']}", ""))
        for name in ("harness", "baseline"):
            if name not in r:
                continue
            figures = r[name]
            rows.append(
                (
                    f"second engine ({name}): archive copies in / reads",
                    f"{figures['archivePuts']} / {figures['archiveGets']}",
                    "<= 1 / 1 per phase" if name == "harness" else "(comparison)",
                )
            )
            rows.append(
                (
                    f"second engine ({name}): run - floor - calls' cost",
                    f"{figures['seconds']:.2f} - {r['floorSeconds']:.2f} - "
                    f"({figures['archivePuts']} x {r['putSeconds'] * 1000:.0f} + {figures['archiveGets']} x "
                    f"{r['getSeconds'] * 1000:.0f} ms) = {figures['overheadBeyondCallsSeconds']:.2f} s",
                    f"<= {r['target']} s" if name == "harness" else "(comparison)",
                )
            )
    if "readiness" in results:
        r = results["readiness"]
        rows.append(
            ("readiness detection latency (harness)", f"{r['harnessSeconds'] * 1000:.0f} ms", "<= 100 ms")
        )
        if "baselineSeconds" in r:
            rows.append(
                (
                    "readiness detection latency (baseline)",
                    f"{r['baselineSeconds'] * 1000:.0f} ms",
                    "(comparison)",
                )
            )
        if "testcontainersSeconds" in r:
            rows.append(
                (
                    "readiness detection latency (testcontainers)",
                    f"{r['testcontainersSeconds'] * 1000:.0f} ms",
                    "(comparison)",
                )
            )
    if "tar" in results:
        r = results["tar"]
        gib = r["tarBytes"] / 2**30
        rows.append(
            (
                f"TAR load, {gib:.2f} GiB: harness / docker load",
                f"{r['harnessSeconds']:.1f} s / {r['cliSeconds']:.1f} s = {r['ratio']:.2f}",
                "<= 1.1",
            )
        )
        rows.append(("TAR load: harness peak RSS", f"{r['harnessPeakRssMiB']:.0f} MiB", "<= 100 MiB"))
    if "import" in results:
        r = results["import"]
        rows.append(("plugin import cost (collect-only)", f"{r['extraSeconds'] * 1000:.0f} ms", "<= 150 ms"))
    if "many" in results:
        for name, seconds in results["many"]["secondsPerImage"].items():
            rows.append((f"wall time per image, {name} (-n N)", f"{seconds:.2f} s", ""))
    width = max(len(row[0]) for row in rows)
    size = max(32, *(len(row[1]) for row in rows))
    print(f"{'figure':<{width}}  {'measured':<{size}}  target")
    for figure, measured, target in rows:
        print(f"{figure:<{width}}  {measured:<{size}}  {target}")


if __name__ == "__main__":
    sys.exit(main())
