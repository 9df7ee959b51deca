"""The gRPC floor: the same container work as a gRPC conformance run, with nothing but the
docker SDK and grpcio. One container start, Status polling, the battery's Run calls (each
case alone, a batch of maxBatchSize + 1, a mixed batch, a maxSize input, the flags), Shutdown,
the exit wait, removal; then the harness's own run of the same image, alternating.

    python benchmarks/grpc_floor.py [--runs N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import grpcwire  # noqa: E402  (the messages only: the floor is not the harness)

IMAGE = "psc-samples/grpc-langid:latest"
DATA = ROOT / "sample_models" / "grpc_langid" / "data"


def call(channel: grpc.Channel, path: str, request: object) -> object:
    _, answer = grpcwire.ROUTES[path]
    method = channel.unary_unary(
        path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=answer.FromString
    )
    return method(request, timeout=20)


def floor() -> float:
    began = time.monotonic()
    client = docker.from_env(version="auto")
    port = random.randint(20000, 59999)
    container = client.containers.run(
        IMAGE,
        detach=True,
        environment={"PSC_MODEL_PORT": str(port)},
        ports={f"{port}/tcp": ("127.0.0.1", None)},
        mem_limit=256 * 2**20,
        nano_cpus=10**9,
    )
    try:
        container.reload()
        host_port = container.ports[f"{port}/tcp"][0]["HostPort"]
        with grpc.insecure_channel(f"127.0.0.1:{host_port}") as channel:
            while True:
                try:
                    if call(channel, grpcwire.STATUS_PATH, grpcwire.StatusRequest()).status_code == 200:  # type: ignore[attr-defined]
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.01)
            call(channel, grpcwire.STATUS_PATH, grpcwire.StatusRequest())  # status.metadata
            cases = sorted(p for kind in ("examples", "validation-error") for p in (DATA / kind).iterdir())

            def item(case: Path) -> dict[str, bytes]:
                return {
                    "input.txt": next(p for p in case.iterdir() if p.name.startswith("input")).read_bytes()
                }

            for case in cases:
                call(channel, grpcwire.RUN_PATH, grpcwire.run_request([item(case)]))
            examples = [c for c in cases if c.parent.name == "examples"]
            bad = next(c for c in cases if c.parent.name == "validation-error")
            call(
                channel,
                grpcwire.RUN_PATH,
                grpcwire.run_request([item(examples[i % len(examples)]) for i in range(5)]),
            )
            call(
                channel,
                grpcwire.RUN_PATH,
                grpcwire.run_request([item(examples[0]), item(bad), item(examples[-1])]),
            )
            call(
                channel,
                grpcwire.RUN_PATH,
                grpcwire.run_request([{"input.txt": (b"hello " * 200_000)[: 2**20]}]),
            )
            call(
                channel,
                grpcwire.RUN_PATH,
                grpcwire.run_request([item(examples[0])], detect_drift=True, explain=True),
            )
            call(channel, grpcwire.SHUTDOWN_PATH, grpcwire.ShutdownRequest())
        container.wait(timeout=20)
    finally:
        container.remove(force=True, v=True)
        client.close()
    return time.monotonic() - began


def harness(work: Path) -> float:
    began = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--model-protocol=grpc",
            "--model-image",
            IMAGE,
            f"--model-data={DATA}",
            "--conformance-report=out",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    work = Path(tempfile.mkdtemp())
    (work / "pytest.ini").write_text("[pytest]\n")
    seen: dict[str, list[float]] = {"floor": [], "harness": []}
    for n in range(runs):  # alternating, so that a busy moment falls on both
        for name in ("floor", "harness") if n % 2 == 0 else ("harness", "floor"):
            seen[name].append(floor() if name == "floor" else harness(work))
    med = {name: statistics.median(values) for name, values in seen.items()}
    print(f"gRPC battery of {IMAGE}, {runs} alternating runs (medians):")
    print(f"  floor script (the same calls, docker SDK + grpcio): {med['floor']:.2f} s")
    print(f"  harness (pytest --model-protocol grpc, reports):    {med['harness']:.2f} s")
    print(f"  ratio {med['harness'] / med['floor']:.2f}, overhead {med['harness'] - med['floor']:.2f} s")


if __name__ == "__main__":
    main()
