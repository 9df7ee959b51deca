"""The floor: the same container work as a conformance run, with nothing but the docker SDK
and requests. One container start, readiness polling, the battery's requests, /shutdown,
the exit wait, removal.

    python benchmarks/floor.py IMAGE DATA_DIR
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import docker
import requests


def main(image: str, data: Path) -> None:
    client = docker.from_env(version="auto")
    port = random.randint(20000, 59999)
    work = Path(tempfile.mkdtemp())
    (work / "in").mkdir()
    (work / "out").mkdir()
    container = client.containers.run(
        image,
        detach=True,
        environment={"PSC_MODEL_PORT": str(port)},
        ports={f"{port}/tcp": ("127.0.0.1", None)},
        mem_limit=256 * 2**20,
        nano_cpus=10**9,
        volumes={
            str(work / "in"): {"bind": "/in", "mode": "ro"},
            str(work / "out"): {"bind": "/out", "mode": "rw"},
        },
    )
    try:
        container.reload()
        url = f"http://127.0.0.1:{container.ports[f'{port}/tcp'][0]['HostPort']}"
        http = requests.Session()
        while True:
            try:
                if http.get(url + "/status", timeout=20).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.01)
        cases = sorted(p for kind in ("examples", "validation-error") for p in (data / kind).iterdir())
        jobs = [*cases, None, None, None, cases[0]]  # the cases, three negative jobs, output-written
        for n, case in enumerate(jobs):
            (work / "in" / str(n)).mkdir()
            (work / "out" / str(n)).mkdir()
            if case is not None:
                source = next(p for p in case.iterdir() if p.name.startswith("input"))
                shutil.copyfile(source, work / "in" / str(n) / "input.txt")
            http.post(
                url + "/run", json={"type": "file", "input": f"/in/{n}", "output": f"/out/{n}"}, timeout=20
            )
        http.post(url + "/run", data=b"not json", headers={"Content-Type": "text/plain"}, timeout=20)
        http.get(url + "/psc-floor-unknown", timeout=20)  # route.unknown-404
        http.get(url + "/run", timeout=20)  # route.wrong-method-405
        http.put(url + "/status", timeout=20)
        http.get(url + "/status", timeout=20)
        http.post(url + "/shutdown", timeout=20)
        container.wait(timeout=20)
    finally:
        container.remove(force=True, v=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
