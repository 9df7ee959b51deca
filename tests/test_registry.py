"""Images by registry reference, against a real registry with authentication."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from harness.plugin import EXIT_NOT_EVALUATED
from harness.registry import PASSWORD_ENV
from sample_models import build
from tests.registry import Registry, free_port, push, running_registry

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("no_harness_leftovers")]

PASSWORD = "Reg1stry-S3cret-pw"
DATA = build.HERE / "langid" / "data"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry"), "author", PASSWORD) as started:
        yield started


@pytest.fixture(scope="module")
def pushed(
    docker_client: docker.DockerClient, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    build.build_all(docker_client, [build.CONFORMANT.name])
    # An image the engine will not hold once pushed, so that a pull really brings it in.
    fresh, _ = docker_client.images.build(
        path=str(build.HERE / "langid"),
        buildargs={"BASE_IMAGE": build.base_tag()},
        labels={"org.psc-harness.test": "registry"},
        pull=False,
        rm=True,
    )
    refs = {
        "conformant": push(docker_client, registry, build.CONFORMANT.tag, "psc/langid"),
        "fresh": push(docker_client, registry, fresh.id, "psc/team/fresh"),
    }
    with contextlib.suppress(docker.errors.ImageNotFound):  # gone with its last tag already
        docker_client.images.remove(fresh.id, force=True)
    return refs


def harness(
    cwd: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The harness as a user runs it, in a subprocess, so that standard input is real."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--conformance-report=out",
            "--junitxml=out/junit.xml",
            *args,
        ],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def report(cwd: Path) -> dict[str, Any]:
    return json.loads((cwd / "out" / "conformance.json").read_text())  # type: ignore[no-any-return]


def assert_password_nowhere(cwd: Path, result: subprocess.CompletedProcess[str]) -> None:
    assert PASSWORD not in result.stdout + result.stderr
    for path in (cwd / "out").glob("*"):
        assert PASSWORD not in path.read_text(errors="replace"), path


def assert_gone(client: docker.DockerClient, ref: str) -> None:
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(ref)


def test_battery_passes_on_a_pulled_image_with_credentials(
    tmp_path: Path, registry: Registry, pushed: dict[str, str], docker_client: docker.DockerClient
) -> None:
    ref = pushed["fresh"]
    result = harness(
        tmp_path,
        "--model-image",
        ref,
        "--registry-username",
        registry.username,
        f"--model-data={DATA}",
        env={PASSWORD_ENV: PASSWORD},
    )
    assert result.returncode == 0, result.stdout
    document = report(tmp_path)
    assert document["verdict"] == "conformant"
    assert document["image"]["source"] == "registry"
    image = document["containerImage"]
    assert (image["registryHost"], image["repositoryNamespace"], image["repositoryName"]) == (
        registry.host,
        "psc/team",
        "fresh",
    )
    assert image["imagePrefix"] == f"{registry.host}/psc/team"
    assert image["uploadPercentage"] == 100
    assert document["loadSteps"][0]["details"]["source"] == "registry"
    assert f"pulling {ref}: 100.0%" in result.stdout
    assert_password_nowhere(tmp_path, result)
    assert_gone(docker_client, ref)


def test_password_from_standard_input(
    tmp_path: Path, registry: Registry, pushed: dict[str, str], docker_client: docker.DockerClient
) -> None:
    result = harness(
        tmp_path,
        "--model-image",
        pushed["conformant"],
        "--registry-username",
        registry.username,
        "--registry-password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert_password_nowhere(tmp_path, result)
    assert_gone(docker_client, pushed["conformant"])
    docker_client.images.get(build.CONFORMANT.tag)  # the image it shares layers and id with stays


def test_credentials_from_the_docker_configuration(
    tmp_path: Path, registry: Registry, pushed: dict[str, str]
) -> None:
    import base64

    config = tmp_path / "docker-config"
    config.mkdir()
    token = base64.b64encode(f"{registry.username}:{PASSWORD}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
    result = harness(tmp_path, "--model-image", pushed["conformant"], env={"DOCKER_CONFIG": str(config)})
    assert result.returncode == 0, result.stdout


def test_keep_image_keeps_what_was_pulled(
    tmp_path: Path, registry: Registry, pushed: dict[str, str], docker_client: docker.DockerClient
) -> None:
    ref = pushed["conformant"]
    result = harness(
        tmp_path,
        "--model-image",
        ref,
        "--registry-username",
        registry.username,
        "--keep-image",
        env={PASSWORD_ENV: PASSWORD},
    )
    assert result.returncode == 0, result.stdout
    docker_client.images.get(ref)
    docker_client.images.remove(ref)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong-password", "harness: the registry {host} refused the credentials of user 'author'"),
        ("no-credentials", "harness: the registry {host} needs credentials*"),
        ("missing-tag", "harness: {host}/psc/langid:no-such-tag was not found in the registry {host}"),
        ("pull-never", "harness: image {host}/psc/langid:latest is not in the Docker engine*"),
    ],
)
def test_registry_errors_are_one_line(
    tmp_path: Path, registry: Registry, pushed: dict[str, str], case: str, expected: str
) -> None:
    args = {
        "wrong-password": (
            ["--model-image", pushed["conformant"], "--registry-username", "author"],
            {PASSWORD_ENV: "wrong-" + PASSWORD},
        ),
        "no-credentials": (["--model-image", pushed["conformant"]], {}),
        "missing-tag": (
            ["--model-image", f"{registry.host}/psc/langid:no-such-tag", "--registry-username", "author"],
            {PASSWORD_ENV: PASSWORD},
        ),
        "pull-never": (["--model-image", pushed["conformant"], "--pull", "never"], {}),
    }[case]
    result = harness(tmp_path, *args[0], env=args[1])
    assert result.returncode == EXIT_NOT_EVALUATED, result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("harness: ")]
    assert len(lines) == 1 and _matches(lines[0], expected.format(host=registry.host)), result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert_password_nowhere(tmp_path, result)


def _matches(line: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(line, pattern)


def test_unreachable_registry(tmp_path: Path) -> None:
    result = harness(tmp_path, "--model-image", f"127.0.0.1:{free_port()}/psc/langid:latest")
    assert result.returncode == EXIT_NOT_EVALUATED
    assert (
        "harness: the registry 127.0.0.1:" in result.stdout
        and "is unreachable (connection refused)" in result.stdout
    )


def test_malformed_reference(tmp_path: Path) -> None:
    result = harness(tmp_path, "--model-image", "127.0.0.1:5000/Psc/Langid:latest")
    assert result.returncode == EXIT_NOT_EVALUATED
    assert "harness: malformed image reference '127.0.0.1:5000/Psc/Langid:latest'" in result.stdout
    assert report(tmp_path)["verdict"] == "error"


def test_username_without_password_is_a_usage_error(tmp_path: Path) -> None:
    result = harness(tmp_path, "--model-image", "x", "--registry-username", "author", env={PASSWORD_ENV: ""})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--registry-username needs a password" in result.stderr


@pytest.mark.parametrize("kind", ["empty", "truncated", "not-an-archive"])
def test_bad_archives(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / "model.tar"
    if kind == "empty":
        archive.write_bytes(b"")
    elif kind == "truncated":
        with build.CONFORMANT_TAR.open("rb") as whole:
            archive.write_bytes(whole.read(build.CONFORMANT_TAR.stat().st_size // 2))
    else:
        archive.write_text("model weights, surely\n" * 1000)
    result = harness(tmp_path, f"--model-tar={archive}")
    assert result.returncode == EXIT_NOT_EVALUATED
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("harness: ")]
    assert str(archive) in line
    assert "Traceback" not in result.stdout + result.stderr
