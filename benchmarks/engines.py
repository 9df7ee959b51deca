"""Figures for the engines work: files through the engine API, and a remote engine's cost.

    python benchmarks/engines.py [--only jobs,big,battery] [--jobs 50] [--big-mib 1024] [--runs 3]

- jobs: per-job cost of copying a small input in and the output directory back through the
  engine's archive API (``jobs.stage`` + ``jobs.collect``, local engine), against the
  bind-mount way it replaced: a host temporary directory, the input written into it, the
  output read back, the directory removed.
- big: a large input copied in by the harness's staging, against ``docker cp`` of the same
  file into the same container.
- battery: the whole conformance run of the conformant sample (``python -m pytest``), on the
  local engine and on the second engine of tests/second_engine.py (needs root).

Figures are medians, contenders alternating; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import jobs  # noqa: E402
from harness.dockerengine import engine  # noqa: E402
from harness.dockerengine.container import ModelContainer  # noqa: E402
from harness.labels import labels  # noqa: E402
from sample_models import build  # noqa: E402

DATA = build.HERE / "langid" / "data"
SMALL_INPUT = b"Bonjour tout le monde, ceci est un petit texte.\n" * 4
SMALL_OUTPUT = b'{"language": "fr", "confidence": 0.97}\n'
LOCAL_ENV = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}


def med(values: list[float]) -> float:
    return statistics.median(values)


@contextlib.contextmanager
def model_container(client: docker.DockerClient) -> Iterator[ModelContainer]:
    """The conformant sample, started as the harness starts it (its files are what is measured)."""
    local = engine.resolve(None, LOCAL_ENV)
    with ModelContainer(
        client, build.CONFORMANT.tag, labels=labels("bench-engines"), engine=local
    ) as container:
        yield container


def per_job(client: docker.DockerClient, count: int) -> dict[str, float]:
    with model_container(client) as container:
        api: list[float] = []
        for _ in range(count):
            began = time.perf_counter()
            dirs = jobs.stage(container, {"input.txt": SMALL_INPUT})
            staged = time.perf_counter() - began
            # The model's output, written as the model would (not counted).
            container.container.exec_run(  # type: ignore[union-attr]
                ["sh", "-c", f"printf '%s' '{SMALL_OUTPUT.decode()}' > {dirs.output_dir}/results.json"]
            )
            began = time.perf_counter()
            outputs = jobs.read_outputs(container, dirs.output_dir, {"results.json": 0})
            api.append(staged + time.perf_counter() - began)
            assert outputs["results.json"].content == SMALL_OUTPUT, outputs
        # As the battery does it: every job's inputs in one copy, then one read back per job.
        began = time.perf_counter()
        batch = jobs.stage_many(container, [{"input.txt": SMALL_INPUT}] * count)
        batched = time.perf_counter() - began
        for dirs in batch:
            began = time.perf_counter()
            jobs.read_outputs(container, dirs.output_dir, {"results.json": 0})
            batched += time.perf_counter() - began
        # The engine's own floor: one PUT and one GET of the archive endpoint, bare docker SDK.
        floor: list[float] = []
        body = io.BytesIO()
        with tarfile.open(fileobj=body, mode="w") as archive:
            info = tarfile.TarInfo("psc-floor/in/input.txt")
            info.size = len(SMALL_INPUT)
            archive.addfile(info, io.BytesIO(SMALL_INPUT))
        assert container.container is not None
        for _ in range(count):
            began = time.perf_counter()
            container.container.put_archive("/", body.getvalue())
            chunks, _stat = container.container.get_archive("/psc-floor/in")
            b"".join(chunks)
            floor.append(time.perf_counter() - began)
    mounts: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        root = Path(tempfile.mkdtemp(prefix="psc-job-"))
        (root / "in").mkdir()
        (root / "out").mkdir()
        (root / "out").chmod(0o777)
        (root / "in" / "input.txt").write_bytes(SMALL_INPUT)
        staged = time.perf_counter() - began
        (root / "out" / "results.json").write_bytes(SMALL_OUTPUT)  # the model's write (not counted)
        began = time.perf_counter()
        assert (root / "out" / "results.json").read_bytes() == SMALL_OUTPUT
        shutil.rmtree(root)
        mounts.append(staged + time.perf_counter() - began)
    return {
        "api_ms": med(api) * 1000,
        "api_p90_ms": sorted(api)[int(0.9 * count)] * 1000,
        "mount_ms": med(mounts) * 1000,
        "floor_ms": med(floor) * 1000,
        "batched_ms": batched / count * 1000,
    }


def big_input(client: docker.DockerClient, mib: int, runs: int, workdir: Path) -> dict[str, float]:
    source = workdir / "big-input.bin"
    with source.open("wb") as out:
        block = secrets.token_bytes(2**20)
        for _ in range(mib):
            out.write(block)
    ours: list[float] = []
    theirs: list[float] = []
    with model_container(client) as container:
        assert container.container is not None
        name = container.container.name
        for _ in range(runs):
            began = time.perf_counter()
            dirs = jobs.stage(container, {"input.bin": source})
            ours.append(time.perf_counter() - began)
            container.container.exec_run(["rm", "-rf", dirs.input_dir, dirs.output_dir])
            container.container.exec_run(["mkdir", "-p", "/psc-cp"])
            began = time.perf_counter()
            subprocess.run(
                ["docker", "cp", str(source), f"{name}:/psc-cp/input.bin"], check=True, env=LOCAL_ENV
            )
            theirs.append(time.perf_counter() - began)
            container.container.exec_run(["rm", "-rf", "/psc-cp"])
    source.unlink()
    return {"harness_s": med(ours), "docker_cp_s": med(theirs), "ratio": med(ours) / med(theirs)}


def battery(runs: int, workdir: Path) -> dict[str, float]:
    from tests import second_engine

    why = second_engine.unavailable()
    if why is not None:
        raise SystemExit(f"battery: {why}")
    (workdir / "pytest.ini").write_text("[pytest]\n")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        f"--model-image={build.CONFORMANT.tag}",
        f"--model-data={DATA}",
        "--conformance-report=out",
    ]
    local = docker.from_env(version="auto", environment=LOCAL_ENV)
    with second_engine.second_engine() as engine2:
        engine2.load(local, [build.CONFORMANT.tag])

        def run(env: dict[str, str]) -> Callable[[], float]:
            def measure() -> float:
                began = time.perf_counter()
                done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
                assert done.returncode == 0, done.stdout[-2000:]
                return time.perf_counter() - began

            return measure

        contenders = {"local": run(LOCAL_ENV), "engine2": run(engine2.env())}
        results: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(runs):
            for name, measure in contenders.items():
                results[name].append(measure())
    local.close()
    return {"local_s": med(results["local"]), "engine2_s": med(results["engine2"])}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="jobs,big,battery")
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    only = set(args.only.split(","))
    client = docker.from_env(version="auto", environment=LOCAL_ENV)
    print(f"engine {client.version().get('Version')}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="psc-bench-engines-") as tmp:
        work = Path(tmp)
        if "jobs" in only:
            figures = per_job(client, args.jobs)
            print(
                f"per job, small input, local engine ({args.jobs} jobs): through the API "
                f"{figures['api_ms']:.1f} ms (p90 {figures['api_p90_ms']:.1f} ms), bind-mount way "
                f"{figures['mount_ms']:.2f} ms: overhead {figures['api_ms'] - figures['mount_ms']:.1f} ms "
                f"(aim <= 20 ms); the engine's floor, one bare PUT + GET of its archive endpoint: "
                f"{figures['floor_ms']:.1f} ms; as the battery stages them (one copy for all its jobs, "
                f"one read per job): {figures['batched_ms']:.1f} ms per job"
            )
        if "big" in only:
            figures = big_input(client, args.big_mib, args.runs, work)
            print(
                f"{args.big_mib} MiB input copied in ({args.runs} runs): "
                f"harness {figures['harness_s']:.2f} s, docker cp {figures['docker_cp_s']:.2f} s: "
                f"{figures['ratio']:.2f}x (aim <= 1.2x)"
            )
        if "battery" in only:
            (work / "battery").mkdir()
            figures = battery(args.runs, work / "battery")
            print(
                f"whole battery, conformant sample ({args.runs} runs): "
                f"local engine {figures['local_s']:.2f} s, second engine {figures['engine2_s']:.2f} s"
            )
    client.close()


if __name__ == "__main__":
    main()
