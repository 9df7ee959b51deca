"""How the harness runs the image, read from the engine while the container runs; and what
every run of the suite left behind (nothing)."""

from __future__ import annotations

from typing import Any

import pytest

from tests import runs
from tests.engine import ContainerRecord
from tests.expect import no_traceback
from tests.harness_api import LABEL, OWNER_LABEL, SESSION_LABEL
from tests.harness_runs import HarnessRuns, Result

pytestmark = pytest.mark.docker

DECLARED_MEMORY = 256 * 2**20  # resources.memory.size of the sample's model.yaml
DECLARED_CPUS = 1
# README: without a model.yaml, 1 GiB and 1 CPU; always a limit of 1024 processes.
DEFAULT_MEMORY = 2**30
DEFAULT_CPUS = 1
PIDS_LIMIT = 1024
# Runs whose container is inspected: conformant, failing, without model.yaml, non-root.
INSPECTED = (runs.CONFORMANT, runs.WRONG_CODES, runs.NO_MODEL_YAML, runs.SAMPLE_RUNS["langid-non-root"])


def the_container(result: Result) -> ContainerRecord:
    assert len(result.containers) == 1, f"{result.run.name}: {len(result.containers)} containers"
    (record,) = result.containers
    assert record.inspect is not None, "the container was gone before it could be inspected"
    return record


def cpus(host_config: dict[str, Any]) -> float:
    if host_config.get("NanoCpus"):
        return float(host_config["NanoCpus"]) / 1e9
    assert host_config.get("CpuQuota") and host_config.get("CpuPeriod"), host_config
    return float(host_config["CpuQuota"]) / float(host_config["CpuPeriod"])


@pytest.mark.parametrize("run", [pytest.param(r, marks=pytest.mark.harness(r), id=r.name) for r in INSPECTED])
def test_the_container_is_confined(harness: HarnessRuns, run: runs.Run) -> None:
    record = the_container(harness(run))
    attrs = record.inspect
    assert attrs is not None
    host = attrs["HostConfig"]
    # Never privileged, never the Docker socket, no host directory at all.
    assert host["Privileged"] is False
    assert not host.get("Binds"), host.get("Binds")
    assert [m for m in attrs["Mounts"] if m["Type"] == "bind"] == []
    assert "docker.sock" not in str(attrs["Mounts"]) + str(host.get("Binds"))
    assert host.get("PidsLimit") == PIDS_LIMIT
    # A random PSC_MODEL_PORT, never 80 or 8080, published on 127.0.0.1 only.
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    port = int(env["PSC_MODEL_PORT"])
    assert port not in (80, 8080)
    assert set(host["PortBindings"]) == {f"{port}/tcp"}
    published = [b for bindings in (attrs["NetworkSettings"]["Ports"] or {}).values() for b in bindings or []]
    assert published, "nothing published"
    assert {b["HostIp"] for b in published} | {b["HostIp"] for b in host["PortBindings"][f"{port}/tcp"]} == {
        "127.0.0.1"
    }


@pytest.mark.harness(runs.CONFORMANT)
def test_declared_memory_and_cpus_are_applied(harness: HarnessRuns) -> None:
    host = the_container(harness(runs.CONFORMANT)).inspect["HostConfig"]  # type: ignore[index]
    assert host["Memory"] == host["MemorySwap"] == DECLARED_MEMORY  # no swap beyond the memory
    assert cpus(host) == DECLARED_CPUS


@pytest.mark.harness(runs.NO_MODEL_YAML)
def test_without_model_yaml_the_container_gets_default_limits(harness: HarnessRuns) -> None:
    result = harness(runs.NO_MODEL_YAML)
    assert result.returncode == 0, result
    assert "no model.yaml" in result.stdout
    host = the_container(result).inspect["HostConfig"]  # type: ignore[index]
    assert host["Memory"] == host["MemorySwap"] == DEFAULT_MEMORY
    assert cpus(host) == DEFAULT_CPUS
    assert host.get("PidsLimit") == PIDS_LIMIT


@pytest.mark.harness(runs.CONFORMANT)
def test_one_container_serves_the_whole_battery(harness: HarnessRuns) -> None:
    result = harness(runs.CONFORMANT)
    record = the_container(result)  # one container created for 19 checks and 11 jobs ...
    assert record.started is not None
    assert [s["stepName"] for s in result.json["loadSteps"]].count(
        "Loading model 'langid'"
    ) == 1  # ... started once


@pytest.mark.harness(runs.CONFORMANT)
def test_the_container_carries_the_labels_of_its_run(harness: HarnessRuns) -> None:
    result = harness(runs.CONFORMANT)
    record = the_container(result)
    assert record.labels[LABEL] == "1"
    assert record.labels[SESSION_LABEL]
    # host:pid-namespace/pid/start-ticks of the pytest process that ran the harness.
    assert record.chain[0] == result.pid
    assert record.labels[OWNER_LABEL] == record.owner_token


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(r, marks=pytest.mark.harness(r), id=r.name)
        for r in (runs.WRONG_CODES, runs.NO_MODEL_YAML)
    ],
)
def test_anonymous_volumes_go_with_the_container_on_pass_and_fail(
    harness: HarnessRuns, run: runs.Run
) -> None:
    result = harness(run)
    assert result.returncode == (1 if run is runs.WRONG_CODES else 0), result
    volumes = the_container(result).volumes
    assert volumes, "the image declares a VOLUME: its container should have had one"
    assert result.volumes_left == []
    assert result.containers_left == []


def results_of(found: Result | dict[str, Result]) -> list[Result]:
    return list(found.values()) if isinstance(found, dict) else [found]


VERDICT_OF_EXIT = {0: "conformant", 1: "nonconformant", 2: "incomplete", 6: "error"}


@pytest.mark.parametrize(
    "entry", [pytest.param(e, marks=pytest.mark.harness(e), id=e.name) for e in runs.ALL]
)
def test_every_run_leaves_nothing_and_shows_no_secret(harness: HarnessRuns, entry: runs.Run) -> None:
    """Whatever its outcome (pass, fail, error, interrupt): no container, no anonymous volume,
    nothing in its TMPDIR, no registry password in its terminal, reports or JUnit XML, no
    traceback, and an exit code that says what its report says."""
    for result in results_of(harness(entry)):
        assert result.containers_left == [], result.containers_left
        assert result.volumes_left == [], result.volumes_left
        assert result.tmp_left == [], f"{result.run.name} left {result.tmp_left} in its TMPDIR"
        if result.run.secret:
            assert result.files_with(result.run.secret) == [], "the password was shown"
        no_traceback(result)
        if result.has_json and result.returncode in VERDICT_OF_EXIT:
            assert result.json["verdict"] == VERDICT_OF_EXIT[result.returncode], result
