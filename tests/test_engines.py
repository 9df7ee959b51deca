"""Any engine the docker CLI can reach: the harness against a second, real Docker engine.

The second engine (tests/second_engine.py) runs on this machine in its own mount
namespace, so it cannot see the harness's files, with its API on 127.0.0.2 (and, as an
alias, 127.0.0.3), publishing ports on 127.0.0.2. The harness runs as an author runs it:
``python -m pytest`` in a fresh directory, its verdict read from ``conformance.json``.

Only resources these tests create are removed; on the shared local engine, leftovers are
looked for by the owner label of the harness process each test started.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from harness.dockerengine import engine
from harness.labels import LABEL, LOADED_IMAGE_LABEL, OWNER_LABEL
from harness.options import EXIT_NOT_EVALUATED
from sample_models import build
from tests import second_engine
from tests.expect import death_is_seen

DATA = build.HERE / "langid" / "data"
SAMPLES = [s for s in build.HTTP_SAMPLES if not s.on_demand]  # the HTTP battery's; gRPC: tests/test_grpc.py
# The same bounds on both engines, with room for a slow start on a loaded machine: only
# the samples that never become ready wait the status timeout whole.
BOUNDS = ("--status-timeout=30s", "--run-timeout=20s", "--shutdown-timeout=5s")
TEST_LABEL = "org.psc-harness.test"
# Samples whose failing check depends on timing, not on the engine: compared by verdict.
TIMING = {"hostile-dies-after-first-answer": 3}  # exits with this code 0.3 s after its first answer
ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "PSC_ENGINE_HOST")


# -- running the harness as an author does ---------------------------------------------------


@dataclass
class Run:
    returncode: int
    stdout: str
    pid: int
    report: dict[str, Any] | None
    outcomes: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str | None:
        return self.report["verdict"] if self.report else None

    def harness_lines(self) -> list[str]:
        return sorted({line for line in self.stdout.splitlines() if line.startswith("harness: ")})


def local_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENGINE_VARIABLES}
    env.update(extra)
    return env


def harness(workdir: Path, env: dict[str, str], *args: str, timeout: float = 600) -> Run:
    """``python -m pytest`` in ``workdir`` (its own pytest.ini), as an author would run it."""
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "pytest.ini").exists():
        (workdir / "pytest.ini").write_text("[pytest]\n")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--conformance-report=reports",
        *args,
    ]
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    stdout, _ = process.communicate(timeout=timeout)
    path = workdir / "reports" / "conformance.json"
    report = json.loads(path.read_text()) if path.exists() else None
    outcomes = {c["id"]: c["outcome"] for c in report["checks"]} if report and "checks" in report else {}
    return Run(process.returncode, stdout, process.pid, report, outcomes)


def left_by(client: docker.DockerClient, pid: int | None = None) -> list[str]:
    """Containers and volumes the harness labelled (of the run of ``pid``, or of any run)."""

    def mine(labels: dict[str, str]) -> bool:
        return pid is None or f"/{pid}/" in labels.get(OWNER_LABEL, "")

    # The summaries alone: on a shared engine, a container listed may be gone before it is inspected.
    containers = [
        f"container {c['Names'][0].lstrip('/')}"
        for c in client.api.containers(all=True, filters={"label": LABEL})
        if mine(c.get("Labels") or {})
    ]
    volumes = [
        f"volume {v.name}"
        for v in client.volumes.list(filters={"label": LABEL})
        if mine(v.attrs.get("Labels") or {})
    ]
    return containers + volumes


def image_present(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def local() -> Iterator[docker.DockerClient]:
    environment = local_env()
    try:
        client = docker.from_env(version="auto", environment=environment)
        client.version()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no local Docker engine: {exc}")
    yield client
    client.close()


def test_the_second_engine_takes_a_subnet_and_port_nobody_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another bridge on 172.29.9.0/24 (and one on .10, as an address): the engine takes .11."""
    routes = json.dumps([{"dst": "default"}, {"dst": "172.29.9.0/24"}, {"dst": "127.0.0.0/8"}])
    addresses = json.dumps([{"addr_info": [{"family": "inet", "local": "172.29.10.7", "prefixlen": 24}]}])

    def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, routes if "route" in args else addresses, "")

    monkeypatch.setattr(second_engine, "_ip", ip)
    assert second_engine._free_subnet() == "172.29.11.1/24"
    port = second_engine._free_port()
    with socket.socket() as holder:  # free on the API address: it can be bound
        holder.bind((second_engine.API_HOST, port))


@pytest.fixture(scope="session")
def engine2() -> Iterator[second_engine.SecondEngine]:
    why = second_engine.unavailable()
    if why is not None:
        pytest.skip(why)
    with second_engine.second_engine() as started:
        yield started


@pytest.fixture(scope="session")
def engine2_client(engine2: second_engine.SecondEngine) -> Iterator[docker.DockerClient]:
    client = engine2.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def local_samples(local: docker.DockerClient) -> list[str]:
    """Every HTTP sample and the conformant gRPC one, in the local engine (built if missing)."""
    loaded = [*SAMPLES, *(s for s in build.GRPC_SAMPLES if s.name == "grpc-langid")]
    missing = [s.name for s in loaded if not image_present(local, s.tag)]
    if missing:
        build.build_all(local, missing)
    return [s.tag for s in loaded]


@pytest.fixture(scope="session")
def samples(
    local: docker.DockerClient, local_samples: list[str], engine2: second_engine.SecondEngine
) -> list[str]:
    """Every sample, copied into the second engine too."""
    engine2.load(local, local_samples)
    return local_samples


@pytest.fixture(scope="session")
def fresh_tar(
    local: docker.DockerClient, local_samples: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    """A `docker save` archive of an image that neither engine holds: the conformant one, relabelled."""
    image, _ = local.images.build(
        path=str(build.HERE / "langid"),
        tag="psc-test/engines-tar:latest",
        buildargs={"BASE_IMAGE": build.base_tag()},
        labels={TEST_LABEL: "engines"},
        pull=False,
        rm=True,
    )
    archive = tmp_path_factory.mktemp("engines-tar") / "engines.tar"
    with archive.open("wb") as out:
        for chunk in image.save(named=True):
            out.write(chunk)
    local.images.remove(image.id, force=True)
    yield archive, str(image.id)
    if image_present(local, image.id):
        local.images.remove(image.id, force=True)


@pytest.fixture
def after_runs(local: docker.DockerClient, engine2_client: docker.DockerClient) -> Iterator[list[int]]:
    """Fails the test if a harness run it started left anything on either engine."""
    pids: list[int] = []
    yield pids
    # Only what these runs made: other sessions may share both engines at the same time.
    left = [item for pid in pids for client in (engine2_client, local) for item in left_by(client, pid)]
    assert not left, f"the harness left behind: {left}"


# -- the engine is resolved as the docker CLI resolves it (no engine needed) -----------------


@pytest.mark.parametrize(
    ("docker_host", "reach", "publish"),
    [
        (None, "127.0.0.1", "127.0.0.1"),
        ("unix:///run/user/1000/docker.sock", "127.0.0.1", "127.0.0.1"),
        ("tcp://127.0.0.2:23751", "127.0.0.2", None),
        ("tcp://docker:2375", "docker", None),
        ("ssh://me@build.example.org:2222", "build.example.org", None),
        ("tcp://[::1]:2375", "::1", None),
    ],
)
def test_the_model_is_reached_where_the_engine_is(
    docker_host: str | None, reach: str, publish: str | None, tmp_path: Path
) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path)} | ({"DOCKER_HOST": docker_host} if docker_host else {})
    found = engine.resolve(None, env)
    assert (found.reach_host, found.publish_host, found.error) == (reach, publish, None)
    assert found.local == (publish is not None)
    overridden = engine.resolve("gateway.internal", env)
    assert (overridden.reach_host, overridden.publish_host) == ("gateway.internal", None)
    assert "reached at gateway.internal (--engine-host)" in overridden.describe()


def test_the_current_docker_context_is_used(tmp_path: Path) -> None:
    subprocess.run(
        ["docker", "context", "create", "psc-remote", "--docker", "host=tcp://10.11.12.13:2376"],
        env=local_env(DOCKER_CONFIG=str(tmp_path)),
        check=True,
        capture_output=True,
    )
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "psc-remote"}))
    found = engine.resolve(None, {"DOCKER_CONFIG": str(tmp_path)})
    assert (found.url, found.origin, found.reach_host) == (
        "tcp://10.11.12.13:2376",
        "docker context psc-remote",
        "10.11.12.13",
    )
    # DOCKER_CONTEXT names another; DOCKER_HOST wins over both, as with the CLI.
    found = engine.resolve(None, {"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "default"})
    assert found.local and found.reach_host == "127.0.0.1"
    found = engine.resolve(None, {"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": "tcp://127.0.0.5:2375"})
    assert found.reach_host == "127.0.0.5"
    found = engine.resolve(None, {"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "nope"})
    assert found.error is not None and "docker context nope does not exist" in found.error


@pytest.mark.parametrize("given", ["tcp://127.0.0.2", "127.0.0.2:8080", "host/path", "::1::2"])
def test_a_bad_engine_host_is_a_usage_error(given: str, tmp_path: Path) -> None:
    run = harness(tmp_path, local_env(), "--model-image=x", f"--engine-host={given}", timeout=120)
    assert run.returncode == 4, run.stdout
    assert "--engine-host: expected a host name or address" in run.stdout


# -- against the second engine ---------------------------------------------------------------


def both(workdir: Path, env2: dict[str, str], *args: str) -> tuple[Run, Run]:
    """The same run on the local engine and on the second one, side by side."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        here = pool.submit(harness, workdir / "local", local_env(), *args)
        there = pool.submit(harness, workdir / "engine2", env2, *args)
        return here.result(), there.result()


@pytest.mark.docker
@pytest.mark.parametrize("sample", [s.name for s in SAMPLES])
def test_every_sample_gets_the_same_verdict_on_both_engines(
    sample: str,
    samples: list[str],
    engine2: second_engine.SecondEngine,
    after_runs: list[int],
    tmp_path: Path,
) -> None:
    tag = build.Sample(sample, "").tag
    here, there = both(tmp_path, engine2.env(), f"--model-image={tag}", f"--model-data={DATA}", *BOUNDS)
    after_runs += [here.pid, there.pid]
    assert here.report is not None, here.stdout
    assert there.report is not None, there.stdout
    assert (there.returncode, there.verdict) == (here.returncode, here.verdict), there.stdout
    if sample in TIMING:  # which check sees the exit depends on when it comes: one does, saying so
        for run in (here, there):
            assert run.report is not None
            death_is_seen(run.report["checks"], exit_code=TIMING[sample])
    else:
        assert there.outcomes == here.outcomes, there.stdout
    assert f"engine: {engine2.url} (DOCKER_HOST, remote)" in there.stdout


@pytest.mark.docker
@pytest.mark.parametrize("how", ["tag", "tar"])
def test_the_grpc_sample_gets_the_same_verdict_on_both_engines(
    how: str,
    samples: list[str],
    engine2: second_engine.SecondEngine,
    after_runs: list[int],
    tmp_path: Path,
) -> None:
    tag = build.Sample("grpc-langid", "").tag
    image = [f"--model-image={tag}"]
    if how == "tar":
        archive = tmp_path / "grpc-langid.tar"
        client = docker.from_env()
        with contextlib.closing(client), archive.open("wb") as out:
            for chunk in client.images.get(tag).save(chunk_size=2**20):
                out.write(chunk)
        image = [f"--model-tar={archive}"]
    data = f"--model-data={build.HERE / 'grpc_langid' / 'data'}"
    here, there = both(tmp_path, engine2.env(), "--model-protocol=grpc", *image, data, *BOUNDS)
    after_runs += [here.pid, there.pid]
    assert (here.returncode, here.verdict) == (0, "conformant"), here.stdout
    assert (there.returncode, there.verdict) == (0, "conformant"), there.stdout
    assert there.outcomes == here.outcomes, there.stdout
    assert f"engine: {engine2.url} (DOCKER_HOST, remote)" in there.stdout


@pytest.mark.docker
def test_a_tar_is_loaded_into_the_second_engine_with_progress_and_removed(
    fresh_tar: tuple[Path, str],
    engine2: second_engine.SecondEngine,
    engine2_client: docker.DockerClient,
    local: docker.DockerClient,
    after_runs: list[int],
    tmp_path: Path,
) -> None:
    archive, image_id = fresh_tar
    here, there = both(tmp_path, engine2.env(), f"--model-tar={archive}", f"--model-data={DATA}")
    after_runs += [here.pid, there.pid]
    assert there.returncode == 0, there.stdout
    assert (there.verdict, there.outcomes) == (here.verdict, here.outcomes)
    assert re.search(r"loading engines\.tar: 100\.0% \(\d+/\d+ MiB\)", there.stdout), there.stdout
    assert there.report is not None and there.report["loadSteps"][0]["details"]["source"] == "tar"
    assert not image_present(engine2_client, image_id)
    assert not image_present(local, image_id)
    assert not engine2_client.volumes.list(filters={"label": LOADED_IMAGE_LABEL})


@pytest.mark.docker
def test_a_pull_goes_through_the_second_engine_with_progress_and_is_removed(
    samples: list[str],
    engine2: second_engine.SecondEngine,
    engine2_client: docker.DockerClient,
    local: docker.DockerClient,
    after_runs: list[int],
    tmp_path: Path,
) -> None:
    with registry(tmp_path / "registry") as address:
        ref = f"{address}/psc-engines/langid:latest"
        local.images.get(build.CONFORMANT.tag).tag(ref)
        try:
            for event in local.images.push(ref, stream=True, decode=True):
                assert "error" not in event, event
        finally:
            local.images.remove(ref)
        assert not image_present(engine2_client, ref)
        run = harness(tmp_path / "run", engine2.env(), f"--model-image={ref}", f"--model-data={DATA}")
    after_runs.append(run.pid)
    assert run.returncode == 0, run.stdout
    assert f"pulling {ref}: 100.0%" in run.stdout
    assert run.report is not None and run.report["image"]["source"] == "registry"
    assert not image_present(engine2_client, ref)


@pytest.mark.docker
def test_no_host_path_is_mounted_and_the_port_is_where_the_header_says(
    samples: list[str], engine2: second_engine.SecondEngine, after_runs: list[int], tmp_path: Path
) -> None:
    workdir = tmp_path / "run"
    workdir.mkdir()
    seen = tmp_path / "container.json"
    # The author's own test runs on the model's container while it runs: it inspects it.
    (workdir / "test_inspect.py").write_text(
        "import json, docker\n"
        "def test_inspect(model_server):\n"
        "    client = docker.from_env(version='auto')  # the engine the run uses: DOCKER_HOST\n"
        "    attrs = client.api.inspect_container(model_server.container_id)\n"
        "    (port,) = [p for p in attrs['NetworkSettings']['Ports'] if p.endswith('/tcp')]\n"
        "    binding = attrs['NetworkSettings']['Ports'][port][0]\n"
        "    published = (binding['HostIp'] or '0.0.0.0') + ':' + binding['HostPort']\n"
        "    client.close()\n"
        "    seen = {'config': attrs, 'published': published, 'reached': model_server.address}\n"
        f"    open({str(seen)!r}, 'w').write(json.dumps(seen))\n"
    )
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    run = harness(
        workdir,
        engine2.env(TMPDIR=str(host_tmp)),
        f"--model-image={build.CONFORMANT.tag}",
        f"--model-data={DATA}",
    )
    after_runs.append(run.pid)
    assert run.returncode == 0, run.stdout
    assert run.outcomes and set(run.outcomes.values()) == {"passed"}
    inspected = json.loads(seen.read_text())
    config = inspected["config"]
    assert not config["HostConfig"].get("Binds")
    assert [m for m in config["Mounts"] if m["Type"] == "bind"] == []
    published_ip, port = inspected["published"].split(":")
    assert published_ip == engine2.publish_ip  # the engine's default address, as the header says
    assert inspected["reached"] == f"127.0.0.2:{port}"
    assert (
        f"engine: {engine2.url} (DOCKER_HOST, remote): the model's port is published on the engine's "
        "default address" in run.stdout
    )
    assert "reached at 127.0.0.2" in run.stdout
    steps = {s["step"]: s for s in run.report["loadSteps"]} if run.report else {}
    assert steps[2]["details"]["reachedAt"] == f"127.0.0.2:{port}"
    assert list(host_tmp.iterdir()) == []  # nothing of the run's files on the host


@pytest.mark.docker
def test_an_unreachable_engine_is_one_line_and_exit_6(samples: list[str], tmp_path: Path) -> None:
    url = f"tcp://{second_engine.API_HOST}:1"
    run = harness(tmp_path / "tcp", local_env(DOCKER_HOST=url), f"--model-image={build.CONFORMANT.tag}")
    assert run.returncode == EXIT_NOT_EVALUATED, run.stdout
    assert run.harness_lines() == [
        f"harness: cannot reach the Docker engine {url} (DOCKER_HOST): connection refused at 127.0.0.2:1"
    ]
    assert "Traceback" not in run.stdout
    run = harness(
        tmp_path / "context",
        local_env(DOCKER_CONTEXT="psc-no-such-context", DOCKER_CONFIG=str(tmp_path)),
        f"--model-image={build.CONFORMANT.tag}",
    )
    assert run.returncode == EXIT_NOT_EVALUATED, run.stdout
    assert run.harness_lines() == [
        "harness: the docker context psc-no-such-context does not exist "
        "(named by DOCKER_CONTEXT; `docker context ls` lists them)"
    ]


@pytest.mark.docker
def test_an_unreachable_published_port_is_one_line_and_exit_6(
    samples: list[str],
    engine2: second_engine.SecondEngine,
    after_runs: list[int],
    tmp_path: Path,
) -> None:
    # The engine's API at 127.0.0.3: its ports are published on 127.0.0.2, not there.
    began = time.monotonic()
    run = harness(
        tmp_path,
        engine2.env(DOCKER_HOST=engine2.alias_url),
        f"--model-image={build.CONFORMANT.tag}",
        f"--model-data={DATA}",
    )
    after_runs.append(run.pid)
    assert run.returncode == EXIT_NOT_EVALUATED, run.stdout
    (line,) = run.harness_lines()
    pattern = (
        r"harness: cannot reach the model's published port at 127\.0\.0\.3:(\d+) \(connection refused\); "
        rf"the engine {re.escape(engine2.alias_url)} \(DOCKER_HOST\) published it on 127\.0\.0\.2:\1; "
        r"the harness may run elsewhere .* give the host .* with --engine-host"
    )
    assert re.fullmatch(pattern, line), line
    assert time.monotonic() - began < 15 + 10, "said within seconds, not at the status timeout"
    assert run.outcomes["status.ready"] == "error"
    assert "passed" not in {run.outcomes[c] for c in run.outcomes if c.startswith(("run.", "shutdown."))}


@pytest.mark.docker
@pytest.mark.parametrize("how", ["option", "ini", "environment"])
def test_the_engine_host_can_be_given(
    how: str, samples: list[str], engine2: second_engine.SecondEngine, after_runs: list[int], tmp_path: Path
) -> None:
    env = engine2.env(DOCKER_HOST=engine2.alias_url)
    args = [f"--model-image={build.CONFORMANT.tag}", f"--model-data={DATA}"]
    if how == "option":
        args.append("--engine-host=127.0.0.2")
    elif how == "ini":
        tmp_path.mkdir(exist_ok=True)
        (tmp_path / "pytest.ini").write_text("[pytest]\nmodel_engine_host = 127.0.0.2\n")
    else:
        env["PSC_ENGINE_HOST"] = "127.0.0.2"
    run = harness(tmp_path, env, *args)
    after_runs.append(run.pid)
    assert run.returncode == 0, run.stdout
    assert "reached at 127.0.0.2 (--engine-host)" in run.stdout


@pytest.mark.docker
def test_the_current_docker_context_reaches_the_second_engine(
    samples: list[str], engine2: second_engine.SecondEngine, after_runs: list[int], tmp_path: Path
) -> None:
    config = tmp_path / "docker-config"
    env = local_env(DOCKER_CONFIG=str(config))
    subprocess.run(
        ["docker", "context", "create", "psc-engine2", "--docker", f"host={engine2.url}"],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(["docker", "context", "use", "psc-engine2"], env=env, check=True, capture_output=True)
    run = harness(tmp_path / "run", env, f"--model-image={build.CONFORMANT.tag}", f"--model-data={DATA}")
    after_runs.append(run.pid)
    assert run.returncode == 0, run.stdout
    assert f"engine: {engine2.url} (docker context psc-engine2, remote)" in run.stdout
    assert run.report is not None and run.report["loadSteps"][1]["details"]["reachedAt"].startswith(
        "127.0.0.2:"
    )


@pytest.mark.docker
def test_what_a_killed_run_left_is_reaped_on_its_own_engine_only(
    fresh_tar: tuple[Path, str],
    engine2: second_engine.SecondEngine,
    engine2_client: docker.DockerClient,
    local: docker.DockerClient,
    after_runs: list[int],
    tmp_path: Path,
) -> None:
    archive, image_id = fresh_tar
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "pytest.ini").write_text("[pytest]\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--model-tar={archive}",
            "--status-timeout=60s",
        ],
        cwd=tmp_path / "killed",
        env=engine2.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not engine2_client.containers.list(filters={"label": LABEL, "status": "running"}):
            assert process.poll() is None, "the run ended before its container ran"
            assert time.monotonic() < deadline, "no container of the run within 120 s"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    left = left_by(engine2_client, process.pid)
    assert any(item.startswith("container") for item in left), left
    assert any(item.startswith("volume psc-harness-load-") for item in left), left
    assert image_present(engine2_client, image_id)

    # A run on the local engine leaves the second engine's leftovers alone...
    here = harness(tmp_path / "local", local_env(), f"--model-image={build.CONFORMANT.tag}")
    after_runs.append(here.pid)
    assert here.returncode == 0, here.stdout
    assert left_by(engine2_client, process.pid) == left
    after_runs.append(process.pid)  # once reaped, nothing of the killed run may be left
    # ...and the next run on the second engine removes them.
    there = harness(tmp_path / "engine2", engine2.env(), f"--model-image={build.CONFORMANT.tag}")
    after_runs.append(there.pid)
    assert there.returncode == 0, there.stdout
    assert "harness: removed what killed runs left: container psc-model-" in there.stdout
    assert not image_present(engine2_client, image_id)


# -- a registry on loopback, for the pull ------------------------------------------------------


@contextlib.contextmanager
def registry(workdir: Path) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1 (no auth): loopback registries are plain HTTP."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed (tests/install-system-deps.sh installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    workdir.mkdir(parents=True)
    (workdir / "config.yml").write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {workdir / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    process = subprocess.Popen(
        [binary, "serve", str(workdir / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, "the registry exited"
                assert time.monotonic() < deadline, "the registry did not come up within 30 s"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.docker
def test_a_large_input_is_streamed_to_the_second_engine_intact(
    samples: list[str],
    engine2: second_engine.SecondEngine,
    engine2_client: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from harness import jobs
    from harness.dockerengine.container import ModelContainer
    from harness.labels import labels

    source = tmp_path / "input.bin"
    source.write_bytes(os.urandom(24 * 2**20))  # over jobs.IN_MEMORY: streamed as it is read

    def no_host_file(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the input was spooled to a file of the host")

    for name in ("TemporaryFile", "SpooledTemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(f"tempfile.{name}", no_host_file)
    where = engine.resolve(None, engine2.env())
    tag = build.Sample("langid-non-root", "").tag
    with ModelContainer(engine2_client, tag, labels=labels("engines-test"), engine=where) as container:
        assert container.container is not None
        dirs = jobs.stage(container, {"input.bin": source, "input.txt": b"Bonjour"})
        check = f"sha256sum {dirs.input_dir}/input.bin && touch {dirs.output_dir}/x && id -u"
        result = container.container.exec_run(["sh", "-c", check])
    assert result.exit_code == 0, result.output
    digest, user = result.output.decode().split()[0], result.output.decode().split()[-1]
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    assert user != "0"  # a non-root model can write its outputs
    assert left_by(engine2_client, os.getpid()) == []


# -- Podman's Docker-compatible API service ----------------------------------------------------

PODMAN_SAMPLES = [
    "langid",
    "langid-non-root",
    "broken-ignores-port",
    "broken-run-no-output",
    "broken-shutdown-exit-1",
    "hostile-output-symlink",
]
# This machine refuses to set a container's RLIMIT_NOFILE and RLIMIT_NPROC to the hard limit,
# which Podman asks for by default (runc: "error setting rlimit type 7: operation not
# permitted"); Docker asks for none. Lower defaults, for this service only.
PODMAN_CONF = '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'


def podman_images() -> set[str]:
    listed = subprocess.run(
        ["podman", "images", "-q", "--no-trunc"], capture_output=True, text=True, check=True
    ).stdout
    return set(listed.split())


@pytest.fixture(scope="session")
def podman(
    local: docker.DockerClient, local_samples: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Podman's Docker-compatible API service, on a socket of its own; the samples loaded into it."""
    if os.geteuid() != 0 or shutil.which("podman") is None:
        pytest.skip("needs root and podman (tests/install-system-deps.sh installs it)")
    work = tmp_path_factory.mktemp("podman")
    (work / "containers.conf").write_text(PODMAN_CONF)
    url = f"unix://{work / 'podman.sock'}"
    before = podman_images()
    log = (work / "service.log").open("wb")
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", url],
        env={**local_env(), "CONTAINERS_CONF": str(work / "containers.conf")},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            # A raw connection first: docker-py leaks the socket of a connection that fails.
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(work / "podman.sock"))
                    break
                except OSError:
                    pass
            assert service.poll() is None, (work / "service.log").read_text()
            assert time.monotonic() < deadline, "Podman's API service did not answer within 60 s"
            time.sleep(0.2)
        client = docker.DockerClient(base_url=url, version="auto", timeout=10)
        client.close()
        tags = [build.Sample(name, "").tag for name in PODMAN_SAMPLES]
        save = subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE, env=local_env())
        loaded = subprocess.run(["podman", "load", "-q"], stdin=save.stdout, capture_output=True)
        assert save.stdout is not None
        save.stdout.close()
        assert save.wait() == 0 and loaded.returncode == 0, loaded.stderr
        yield url
    finally:
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()
        for image in podman_images() - before:  # only what these tests brought
            subprocess.run(["podman", "rmi", "-f", image], capture_output=True)


@pytest.mark.docker
@pytest.mark.parametrize("sample", PODMAN_SAMPLES)
def test_podman_gives_the_same_verdicts(
    sample: str, podman: str, local: docker.DockerClient, tmp_path: Path
) -> None:
    tag = build.Sample(sample, "").tag
    here, there = both(
        tmp_path, local_env(DOCKER_HOST=podman), f"--model-image={tag}", f"--model-data={DATA}", *BOUNDS
    )
    assert there.report is not None, there.stdout
    assert (there.returncode, there.verdict, there.outcomes) == (
        here.returncode,
        here.verdict,
        here.outcomes,
    ), there.stdout
    assert f"engine: {podman} (DOCKER_HOST, local)" in there.stdout
    client = docker.DockerClient(base_url=podman, version="auto")
    try:
        assert left_by(client, there.pid) == []
    finally:
        client.close()
    assert left_by(local, here.pid) == []


@pytest.mark.docker
def test_podman_loads_a_tar_and_removes_it(podman: str, fresh_tar: tuple[Path, str], tmp_path: Path) -> None:
    archive, image_id = fresh_tar
    run = harness(tmp_path, local_env(DOCKER_HOST=podman), f"--model-tar={archive}", f"--model-data={DATA}")
    assert run.returncode == 0, run.stdout
    assert re.search(r"loading engines\.tar: 100\.0%", run.stdout), run.stdout
    client = docker.DockerClient(base_url=podman, version="auto")
    try:
        assert not image_present(client, image_id)
        assert left_by(client, run.pid) == []
    finally:
        client.close()
