"""Hostile images, bad input and interruptions: bounded time, nothing left behind, one clear line."""

from __future__ import annotations

import fnmatch
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from harness.container import LOG_TAIL_BYTES, Limits, ModelContainer
from harness.plugin import EXIT_NOT_EVALUATED
from harness.reaper import OWNER_LABEL, TEMP_PREFIX
from harness.run import LABEL
from sample_models import build

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("sample_images")]

DATA = build.HERE / "langid" / "data"


@pytest.fixture(scope="module")
def sample_images(docker_client: docker.DockerClient) -> None:
    build.build_all(docker_client)


def leftovers(client: docker.DockerClient) -> list[str]:
    containers = [c.name for c in client.containers.list(all=True, filters={"label": LABEL})]
    directories = [str(p) for p in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*")]
    return containers + directories


@pytest.fixture
def clean_engine(docker_client: docker.DockerClient) -> Iterator[None]:
    assert leftovers(docker_client) == [], "a previous test left resources behind"
    yield
    left = leftovers(docker_client)
    for container in docker_client.containers.list(all=True, filters={"label": LABEL}):
        container.remove(force=True, v=True)
    assert left == []


def harness_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--conformance-report=out", *args]


def run_harness(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(harness_command(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def checks_by_outcome(cwd: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for check in json.loads((cwd / "out" / "conformance.json").read_text())["checks"]:
        found.setdefault(check["outcome"], set()).add(check["id"])
    return found


# -- hostile images ----------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_engine")
def test_huge_body_is_read_up_to_the_cap(tmp_path: Path) -> None:
    result = run_harness(tmp_path, "--model-image", "psc-samples/hostile-huge-body:latest")
    assert result.returncode == 1
    assert checks_by_outcome(tmp_path)["failed"] == {"status.schema"}
    assert "[body cut at 1024 KiB]" in result.stdout


@pytest.mark.usefixtures("clean_engine")
def test_trickling_answer_meets_the_status_timeout(tmp_path: Path) -> None:
    began = time.monotonic()
    result = run_harness(
        tmp_path, "--model-image", "psc-samples/hostile-trickle:latest", "--status-timeout=4s"
    )
    took = time.monotonic() - began
    assert result.returncode == 1
    assert checks_by_outcome(tmp_path)["failed"] == {"status.ready"}
    assert "the answer was still arriving" in result.stdout
    assert took < 60, f"a 4 s status timeout kept the run going for {took:.0f} s"


@pytest.mark.usefixtures("clean_engine")
def test_crash_during_run_is_reported_once(tmp_path: Path) -> None:
    result = run_harness(
        tmp_path, "--model-image", "psc-samples/hostile-crash-during-run:latest", f"--model-data={DATA}"
    )
    assert result.returncode == 1
    outcomes = checks_by_outcome(tmp_path)
    assert outcomes["failed"] == {"run.example[english]"}
    assert "the container exited with code 70" in result.stdout
    assert {"shutdown.response", "shutdown.exit-code", "run.not-json-415"} <= outcomes["skipped"]


@pytest.mark.usefixtures("clean_engine")
def test_log_tail_of_a_flooding_container_is_bounded(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    image = docker_client.images.get("psc-samples/hostile-log-flood:latest")
    with ModelContainer(
        docker_client, image.id, labels={LABEL: "1"}, limits=Limits(None, None), mounts={}
    ) as model:
        assert model.container is not None
        deadline = time.monotonic() + 120
        while b"wrote 256 MiB of log" not in model.container.logs(tail=3):
            assert time.monotonic() < deadline, "the flood did not end within 120 s"
            time.sleep(0.5)
        tail = model.log_tail()
    assert 0 < len(tail.encode()) <= LOG_TAIL_BYTES + 16
    assert "log flood" in tail or "wrote 256 MiB" in tail


# -- bad input ---------------------------------------------------------------------------------


def test_archive_with_several_images_lists_them(docker_client: docker.DockerClient, tmp_path: Path) -> None:
    archive = tmp_path / "two.tar"
    names = [build.CONFORMANT.tag, "psc-samples/broken-status-html:latest"]
    response = docker_client.api._get(
        docker_client.api._url("/images/get"), params={"names": names}, stream=True
    )
    with response, archive.open("wb") as out:
        for chunk in response.iter_content(1 << 20):
            out.write(chunk)
    result = run_harness(tmp_path, f"--model-tar={archive}")
    assert result.returncode == EXIT_NOT_EVALUATED
    assert f"harness: {archive} holds 2 images" in result.stdout
    assert all(name in result.stdout for name in names)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--model-yaml=nowhere/model.yaml"], "harness: model.yaml */nowhere/model.yaml does not exist"),
        (["--model-data=nowhere"], "harness: the test-case directory */nowhere does not exist"),
    ],
)
def test_missing_paths(tmp_path: Path, args: list[str], line: str) -> None:
    result = run_harness(tmp_path, "--model-image", build.CONFORMANT.tag, *args)
    assert result.returncode == EXIT_NOT_EVALUATED
    assert any(fnmatch.fnmatch(out, line) for out in result.stdout.splitlines()), result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: [unclosed\n", "is not valid YAML"),
        ("- just\n- a list\n", "is not of type 'object'"),
    ],
)
def test_model_yaml_that_cannot_be_used(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "model.yaml").write_text(content)
    result = run_harness(tmp_path, "--model-image", build.CONFORMANT.tag, "--model-yaml=model.yaml")
    assert result.returncode == EXIT_NOT_EVALUATED
    assert message in result.stdout


def test_options_without_an_image(tmp_path: Path) -> None:
    result = run_harness(tmp_path, f"--model-data={DATA}")
    assert result.returncode == EXIT_NOT_EVALUATED
    assert "harness: no image given" in result.stderr


# -- interruptions -----------------------------------------------------------------------------


def start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        harness_command(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.usefixtures("clean_engine")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("after", [0.8, 3.0], ids=["while-starting", "while-waiting-for-status"])
def test_interrupted_run_leaves_nothing(tmp_path: Path, signum: int, after: float) -> None:
    process = start(tmp_path, "--model-image", "psc-samples/langid-slow-start:latest")
    time.sleep(after)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output


@pytest.mark.usefixtures("clean_engine")
def test_killed_run_is_reaped_by_the_next(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    process = start(tmp_path, "--model-image", "psc-samples/langid-slow-start:latest")
    deadline = time.monotonic() + 30
    while not docker_client.containers.list(filters={"label": OWNER_LABEL}):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    process.kill()
    process.communicate()
    assert leftovers(docker_client), "SIGKILL left nothing: this test would prove nothing"
    result = run_harness(tmp_path, "--model-image", build.CONFORMANT.tag)
    assert result.returncode == 0
    assert "harness: removed what killed runs left: container psc-model-" in result.stdout


@pytest.mark.usefixtures("clean_engine")
def test_a_live_run_is_never_reaped(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    slow = start(tmp_path / "a", "--model-image", "psc-samples/langid-slow-start:latest")
    deadline = time.monotonic() + 30
    while not docker_client.containers.list(filters={"label": OWNER_LABEL}):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    quick = run_harness(tmp_path / "b", "--model-image", build.CONFORMANT.tag)
    assert quick.returncode == 0
    assert "removed what killed runs left" not in quick.stdout
    output, _ = slow.communicate(timeout=120)
    assert slow.returncode == 0, output
