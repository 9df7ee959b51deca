"""The parts of the core that need no Docker engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cases, checks, units
from harness.errors import SetupError
from harness.metadata import parse_metadata
from sample_models import build

SAMPLE_YAML = (build.HERE / "langid" / "model.yaml").read_text()


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 * 2**20),
        ("1G", 2**30),
        ("128K", 128 * 1024),
        ("1.5G", int(1.5 * 2**30)),
        (4096, 4096),
        ("2Gi", 2 * 2**30),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert units.parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "seconds"), [("20s", 20), ("5m", 300), ("1h", 3600), ("250ms", 0.25), ("7", 7), (3, 3)]
)
def test_durations(text: object, seconds: float) -> None:
    assert units.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "0s", "-3s", None, True, "10d"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        units.parse_duration(text)


def test_sample_metadata_is_read() -> None:
    metadata = parse_metadata(SAMPLE_YAML, "model.yaml")
    assert metadata.inputs == ("input.txt",)
    assert metadata.outputs == ("results.json",)
    assert metadata.memory_bytes == 256 * 2**20
    assert metadata.cpu_count == 1
    assert (metadata.status_timeout, metadata.run_timeout) == (20, 20)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("status: 20s", "status: ''"), "timeout.status"),
        (("status: 20s", "status: 20 parsecs"), "timeout.status"),
        (("size: 256M", "size: lots"), "resources.memory.size"),
        (("count: 1\n  gpu", "count: one\n  gpu"), "resources.cpu.count"),
        (("version: 1.0.0", "version: '1.0'"), "version"),
        (("specification: '0.3'", "specification: '0.4'"), "specification"),
        (("inputs:", "inputz:"), "inputs"),
        (("size: 256M", "size: 1M"), "below Docker's minimum"),
    ],
)
def test_invalid_metadata_names_the_field(change: tuple[str, str], message: str) -> None:
    assert change[0] in SAMPLE_YAML
    with pytest.raises(SetupError, match=rf"^where/model\.yaml\b.*{message}"):
        parse_metadata(SAMPLE_YAML.replace(*change), "where/model.yaml")


def test_content_type_is_read_whatever_the_header_case() -> None:
    from harness.http import Exchange

    # The client keeps header names in lower case, whatever case the server sent.
    exchange = Exchange(
        "GET", "/status", {}, b"", status=200, headers={"content-type": "Application/JSON; charset=utf-8"}
    )
    assert exchange.media_type == "application/json"
    assert exchange.header("Content-Type") == "Application/JSON; charset=utf-8"


def test_metadata_that_is_not_yaml() -> None:
    with pytest.raises(SetupError, match="is not valid YAML at line 2"):
        parse_metadata("name: x\n  - : [", "m.yaml")


def make_case(root: Path, kind: str, name: str, files: dict[str, str]) -> None:
    for relative, content in files.items():
        path = root / kind / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def test_case_files_with_or_without_extension_or_in_a_directory(tmp_path: Path) -> None:
    make_case(tmp_path, "examples", "plain", {"input.txt": "a", "results.json": "{}"})
    make_case(tmp_path, "examples", "bare", {"input": "b"})
    make_case(tmp_path, "examples", "nested", {"input.txt/anything.txt": "c"})
    make_case(tmp_path, "validation-error", "empty", {"input.txt": "", "message.txt": "Is Empty\n"})
    found = {c.name: c for c in cases.discover(tmp_path).cases}
    assert [c.kind for c in found.values()] == ["examples"] * 3 + ["validation-error"]
    assert {
        name: cases.resolve_inputs(c, ("input.txt",))["input.txt"].read_text() for name, c in found.items()
    } == {
        "plain": "a",
        "bare": "b",
        "nested": "c",
        "empty": "",
    }
    assert set(cases.expected_outputs(found["plain"], ("results.json",))) == {"results.json"}
    assert cases.expected_message(found["empty"]) == "Is Empty"


def test_case_without_its_input_is_a_setup_error(tmp_path: Path) -> None:
    make_case(tmp_path, "examples", "lost", {"results.json": "{}"})
    (case,) = cases.discover(tmp_path).cases
    with pytest.raises(SetupError, match=r"case examples/lost has no input file input\.txt"):
        cases.resolve_inputs(case, ("input.txt",))


def test_missing_or_empty_data_directory(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="does not exist"):
        cases.discover(tmp_path / "nope")
    with pytest.raises(SetupError, match="holds no test case: expected examples/<case>/"):
        cases.discover(tmp_path)


def test_battery_ids_are_unique_and_shutdown_comes_last(tmp_path: Path) -> None:
    make_case(tmp_path, "examples", "one", {"input.txt": "a"})
    ids = [check.id for check in checks.battery(cases.discover(tmp_path).cases)]
    assert len(ids) == len(set(ids))
    assert ids[-2:] == ["shutdown.response", "shutdown.exit-code"]
    assert "run.example[one]" in ids
    assert "run.validation-error" in ids  # no such cases: one item that skips with the reason


def test_readme_lists_every_check_as_the_registry_declares_it() -> None:
    from harness.__main__ import checks_table

    readme = (build.ROOT / "README.md").read_text()
    for protocol in ("http", "grpc"):
        table = checks_table(protocol)
        assert table in readme, f"paste `python -m harness checks {protocol}` in README"
    for check_id, rule, summary in checks.describe_all():
        assert f"| `{check_id}` | [{rule}](docs/contract.md#{rule}) | {summary} |" in checks_table()


def test_a_check_is_declared_once_with_its_docstring_as_summary() -> None:
    from harness.battery import Phase, Registry

    registry = Registry("test")

    @registry.check("x.one", rule="r", phase=Phase.RUN, jobs=lambda ctx: [{}])
    def one(ctx: object) -> None:
        """does one thing,
        on two lines

        Not this paragraph."""

    assert one.summary == "does one thing, on two lines"
    with pytest.raises(ValueError, match=r"x\.one is declared twice"):
        registry.check("x.one", rule="r", phase=Phase.RUN)(lambda ctx: None)


def test_log_tail_keeps_the_end_of_a_framed_stream() -> None:
    from harness.dockerengine.calls import LOG_TAIL_BYTES, _LogFrames

    def frame(payload: bytes) -> bytes:
        return bytes([1, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload

    stream = b"".join([frame(b"x" * 2000 + b"\n")] * 39 + [frame(b"FATAL: out of memory\n")])
    frames = _LogFrames()
    for at in range(0, len(stream), 777):  # frames cut across reads
        frames.feed(stream[at : at + 777])
    assert frames.text.endswith(b"FATAL: out of memory\n")
    assert len(frames.text) <= 2 * LOG_TAIL_BYTES
    assert b"\x01\x00\x00\x00" not in frames.text


def test_reaper_judges_only_owners_of_this_host_and_namespace() -> None:
    import os
    import subprocess

    from harness import labels

    assert not labels.owner_gone(labels.owner_token())  # this process
    child = subprocess.Popen(["true"])
    token = labels.owner_token(child.pid)
    child.wait()
    assert labels.owner_gone(token)  # ran here, and is gone
    assert not labels.owner_gone(token.replace(labels._place(), "elsewhere:1"))  # cannot tell: keep
    assert labels.owner_gone(f"{labels._place()}/{os.getpid()}/0")  # a reused pid: not the owner
    assert not labels.owner_gone("garbage")


def test_engine_times_are_read_to_the_nanosecond_and_zero_is_none() -> None:
    from harness.units import parse_engine_time

    base = parse_engine_time("2026-12-01T21:51:04Z")
    assert base is not None
    assert parse_engine_time("2026-12-01T21:51:04.571584080Z") == pytest.approx(base + 0.571584080)
    assert parse_engine_time("2026-12-01T22:51:04.5+01:00") == pytest.approx(base + 0.5)  # Podman's offsets
    assert parse_engine_time("0001-01-01T00:00:00Z") is None  # the engine's "never"
    assert parse_engine_time("yesterday") is None and parse_engine_time(None) is None


def test_an_unreachable_engine_is_explained_by_the_os_error_at_its_root() -> None:
    import requests
    import urllib3.exceptions

    from harness.dockerengine.images import reason

    def wrapped(root: OSError) -> Exception:
        # As the docker SDK raises it: its exception from requests' from urllib3's, the OSError an argument.
        cause = requests.exceptions.ConnectionError(
            urllib3.exceptions.ProtocolError("Connection aborted.", root)
        )
        try:
            raise Exception("Error while fetching server API version: (...)") from cause
        except Exception as exc:
            return exc

    assert reason(wrapped(PermissionError(13, "x"))).startswith("permission denied on the Docker socket")
    assert reason(wrapped(FileNotFoundError(2, "x"))).startswith("no engine answers")
    assert reason(wrapped(ConnectionRefusedError(111, "x"))).startswith("no engine answers")
    # The words alone decide nothing: a message that merely mentions them is quoted as it is.
    assert reason(Exception("Permission denied by the registry")) == "Permission denied by the registry"


def test_the_grpc_variant_without_its_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from harness import contracts

    assert contracts.available("grpc") is None  # the dev install has the extra
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert (
        contracts.available("grpc")
        == "the gRPC variant needs the grpc extra: pip install 'psc-model-harness[grpc]'"
    )
    assert contracts.available("http") is None


def test_a_model_yaml_of_the_grpc_variant_is_read_with_its_batch_size() -> None:
    text = (build.HERE / "grpc_langid" / "model.yaml").read_text()
    found = parse_metadata(text, "model.yaml")
    assert (found.protocol, found.max_batch_size) == ("grpc", 4)
    with pytest.raises(SetupError, match=r"type must be file with specification '0\.3'"):
        parse_metadata(text.replace("type: grpc", "type: file"), "model.yaml")
