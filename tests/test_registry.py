"""Images by registry reference, against a real registry with authentication on loopback.

Every image that a test expects the harness to pull is one the engine does not hold (or,
for ``--pull always``, holds under that very reference): the run must show that it came
from the registry (the report's ``source``, the engine's pull event), and whatever it
leaves is removed by the suite after noting it.
"""

from __future__ import annotations

import fnmatch

import pytest

from tests import runs
from tests.harness_api import EXIT_NOT_EVALUATED, EXIT_USAGE
from tests.harness_runs import HarnessRuns, Result

pytestmark = pytest.mark.docker


def registry_host(result: Result) -> str:
    return result.json["image"]["reference"].split("/", 1)[0]


def pulled(harness: HarnessRuns, result: Result, ref: str) -> bool:
    """The engine reported a pull of ``ref`` while the run ran."""
    return ref in harness.ctx.watch.images_between("pull", result.began, result.ended)


@pytest.mark.harness(runs.PULLED)
def test_battery_passes_on_a_pulled_image_with_credentials(harness: HarnessRuns) -> None:
    result = harness(runs.PULLED)
    ref = result.json["image"]["reference"]
    assert result.returncode == 0, result
    assert result.json["verdict"] == "conformant"
    assert result.json["image"]["source"] == "registry"
    assert pulled(harness, result, ref), "the engine saw no pull: the image did not come from the registry"
    image = result.json["containerImage"]
    host = registry_host(result)
    assert (image["registryHost"], image["repositoryNamespace"], image["repositoryName"]) == (
        host,
        "psc/team",
        "credentials",
    )
    assert image["imagePrefix"] == f"{host}/psc/team"
    assert image["uploadPercentage"] == 100
    assert result.json["loadSteps"][0]["details"]["source"] == "registry"
    assert f"pulling {ref}: 100.0%" in result.stdout
    assert result.images_left == [], "the pulled image was not removed"


@pytest.mark.harness(runs.USERNAME_FROM_ENV)
def test_username_from_the_environment(harness: HarnessRuns) -> None:
    result = harness(runs.USERNAME_FROM_ENV)
    assert result.returncode == 0, result
    assert result.json["image"]["source"] == "registry"
    assert pulled(harness, result, result.json["image"]["reference"])
    assert result.images_left == []


@pytest.mark.harness(runs.BY_DIGEST)
def test_a_digest_reference_is_pulled(harness: HarnessRuns) -> None:
    result = harness(runs.BY_DIGEST)
    ref = result.json["image"]["reference"]
    assert "@sha256:" in ref
    assert result.returncode == 0, result
    assert result.json["image"]["source"] == "registry"
    assert result.json["image"]["digest"] == ref or result.json["image"]["digest"].endswith(ref.split("@")[1])
    assert pulled(harness, result, ref.split("@")[0]) or pulled(harness, result, ref)
    assert result.images_left == []


@pytest.mark.harness(runs.PASSWORD_STDIN)
def test_password_from_standard_input(harness: HarnessRuns) -> None:
    result = harness(runs.PASSWORD_STDIN)
    assert result.returncode == 0, result
    assert result.json["image"]["source"] == "registry"
    assert pulled(harness, result, result.json["image"]["reference"])
    assert result.images_left == []
    # The sample that shares its id and layers with the pulled reference stays.
    assert runs.image_present(runs.LANGID)


@pytest.mark.harness(runs.DOCKER_CONFIG)
def test_credentials_from_the_docker_configuration(harness: HarnessRuns) -> None:
    result = harness(runs.DOCKER_CONFIG)
    assert result.returncode == 0, result
    assert result.json["image"]["source"] == "registry"
    assert result.images_left == []


@pytest.mark.harness(runs.KEEP_IMAGE)
def test_keep_image_keeps_what_was_pulled(harness: HarnessRuns) -> None:
    result = harness(runs.KEEP_IMAGE)
    assert result.returncode == 0, result
    assert result.json["image"]["source"] == "registry"
    assert result.images_left == [result.json["image"]["reference"]]  # kept; the suite removed it


@pytest.mark.harness(runs.PULL_POLICIES)
def test_pull_policies_on_a_reference_the_engine_holds(harness: HarnessRuns) -> None:
    found = harness(runs.PULL_POLICIES)
    missing, always = found["missing"], found["always"]
    ref = missing.json["image"]["reference"]
    # missing (the default): the engine's copy is used, nothing is pulled.
    assert missing.returncode == 0, missing
    assert missing.json["image"]["source"] == "tag"
    assert not pulled(harness, missing, ref)
    # always: pulled although present.
    assert always.returncode == 0, always
    assert always.json["image"]["source"] == "registry"
    assert pulled(harness, always, ref)
    # Neither removes a reference it did not bring.
    assert missing.facts["present_after"] and always.facts["present_after"]


@pytest.mark.harness(runs.GHCR)
def test_readme_example_of_the_registry_fields(harness: HarnessRuns) -> None:
    result = harness(runs.GHCR)["run"]
    assert result.returncode == 0, result
    image = result.json["containerImage"]
    assert (
        image["registryHost"],
        image["repositoryNamespace"],
        image["repositoryName"],
        image["imagePrefix"],
    ) == (
        "ghcr.io",
        "org/team",
        "model",
        "ghcr.io/org/team",
    )


REGISTRY_ERROR_LINES = {
    "wrong-password": "harness: the registry {host} refused the credentials of user 'author'",
    "no-credentials": "harness: the registry {host} needs credentials*",
    "missing-tag": "harness: {host}/psc/errors:no-such-tag was not found in the registry {host}",
    "pull-never": "harness: image {host}/psc/errors:latest is not in the Docker engine*",
}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.harness(runs.REGISTRY_ERRORS[c]))
        for c in sorted(REGISTRY_ERROR_LINES)
    ],
)
def test_registry_errors_are_one_line(harness: HarnessRuns, case: str) -> None:
    result = harness(runs.REGISTRY_ERRORS[case])
    assert result.returncode == EXIT_NOT_EVALUATED, result
    (line,) = result.harness_lines()
    assert fnmatch.fnmatchcase(line, REGISTRY_ERROR_LINES[case].format(host=registry_host(result))), line
    assert "Traceback" not in result.output
    assert result.json["verdict"] == "error"


@pytest.mark.harness(runs.UNREACHABLE_REGISTRY)
def test_unreachable_registry(harness: HarnessRuns) -> None:
    result = harness(runs.UNREACHABLE_REGISTRY)
    assert result.returncode == EXIT_NOT_EVALUATED
    (line,) = result.harness_lines()
    assert line.startswith("harness: the registry 127.0.0.1:")
    assert "is unreachable (connection refused)" in line


@pytest.mark.harness(runs.MALFORMED_REFERENCE)
def test_malformed_reference(harness: HarnessRuns) -> None:
    result = harness(runs.MALFORMED_REFERENCE)
    assert result.returncode == EXIT_NOT_EVALUATED
    (line,) = result.harness_lines()
    assert line.startswith("harness: malformed image reference '127.0.0.1:5000/Psc/Langid:latest'")
    assert result.json["verdict"] == "error"


@pytest.mark.harness(runs.USERNAME_WITHOUT_PASSWORD)
def test_username_without_password_is_a_usage_error(harness: HarnessRuns) -> None:
    result = harness(runs.USERNAME_WITHOUT_PASSWORD)
    assert result.returncode == EXIT_USAGE
    assert "--registry-username needs a password" in result.stderr


@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, marks=pytest.mark.harness(runs.BAD_ARCHIVES[k])) for k in sorted(runs.BAD_ARCHIVES)],
)
def test_bad_archives(harness: HarnessRuns, kind: str) -> None:
    result = harness(runs.BAD_ARCHIVES[kind])
    assert result.returncode == EXIT_NOT_EVALUATED
    (line,) = result.harness_lines()
    assert str(result.cwd / "model.tar") in line
    assert "Traceback" not in result.output
