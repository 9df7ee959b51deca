"""The sample images, checked with plain requests and docker SDK calls (not the plugin)."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
import yaml

from harness.envelope import reason_phrases
from sample_models import build
from tests.containers import Running, host_port, started

pytestmark = pytest.mark.docker

MODEL_DIR = build.HERE / "langid"
DATA = MODEL_DIR / "data"
METADATA = yaml.safe_load((MODEL_DIR / "model.yaml").read_text())
(INPUT_NAME,) = METADATA["inputs"]
(OUTPUT_NAME,) = METADATA["outputs"]
EXAMPLES = sorted(p.name for p in (DATA / "examples").iterdir())
VALIDATION_ERRORS = sorted(p.name for p in (DATA / "validation-error").iterdir())


def envelope(response: requests.Response) -> dict[str, object]:
    assert response.headers["Content-Type"].split(";")[0].strip() == "application/json"
    body = response.json()
    assert set(body) == {"statusCode", "status", "message"}
    assert body["statusCode"] == response.status_code and type(body["statusCode"]) is int
    assert isinstance(body["status"], str) and isinstance(body["message"], str)
    assert body["status"] in reason_phrases(response.status_code)
    return body  # type: ignore[no-any-return]


def stage_input(case_dir: Path, input_dir: Path) -> None:
    """Copy a case's input file under the declared name (it may be kept without extension)."""
    stem = INPUT_NAME.rsplit(".", 1)[0]
    (source,) = [p for p in case_dir.iterdir() if p.name in (INPUT_NAME, stem)]
    shutil.copyfile(source, input_dir / INPUT_NAME)


@pytest.fixture(scope="session")
def start(docker_client: docker.DockerClient, samples: dict[str, str], session_token: str) -> Any:
    """``start(name, ...)``: a sample's container, labelled as this session's own."""

    def run(name: str, **kwargs: Any) -> Any:
        return started(docker_client, build.Sample(name, "").tag, owner=session_token, **kwargs)

    return run


@pytest.fixture
def job_dirs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    return tmp_path / "in", tmp_path / "out"


@pytest.fixture(scope="module")
def conformant(start: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Path]]:
    root = tmp_path_factory.mktemp("conformant")
    with start(build.CONFORMANT.name, mounts={root: "/jobs"}) as running:
        running.wait_ready()
        yield running, root


def run_case(running: Running, root: Path, case_dir: Path) -> tuple[requests.Response, Path]:
    job = root / case_dir.parent.name / case_dir.name
    (job / "in").mkdir(parents=True)
    stage_input(case_dir, job / "in")
    inside = f"/jobs/{case_dir.parent.name}/{case_dir.name}"
    response = running.post("/run", json={"type": "file", "input": f"{inside}/in", "output": f"{inside}/out"})
    return response, job / "out"


# --- the build --------------------------------------------------------------------------


def test_every_sample_is_built_and_labelled(
    docker_client: docker.DockerClient, samples: dict[str, str]
) -> None:
    assert set(samples) == {s.name for s in build.SAMPLES if not s.on_demand}
    for sample in (s for s in build.SAMPLES if not s.on_demand):
        image = docker_client.images.get(sample.tag)
        assert image.labels[build.LABEL] == sample.name
        config = image.attrs["Config"]
        if sample.name == "broken-no-command":
            assert not config.get("Cmd") and not config.get("Entrypoint")
        elif sample.protocol == "grpc":
            assert config["Cmd"] == ["python3", "-m", "grpc_app.serve"]
        else:
            assert config["Cmd"] == ["python3", "-m", "langid_app.serve"]
    tar_id = build.CONFORMANT_TAR.with_suffix(".id").read_text()
    assert tar_id == samples[build.CONFORMANT.name]
    assert build.CONFORMANT_TAR.stat().st_size > 10 * 2**20


def test_rebuilding_unchanged_samples_changes_nothing(
    docker_client: docker.DockerClient, samples: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_bootstrap(*_args: object) -> None:
        raise AssertionError("the base image was rebuilt although its recipe did not change")

    monkeypatch.setattr(build, "bootstrap_base", no_bootstrap)
    # One sample of each recipe path: the app, a build target of its own, another model.yaml.
    names = [build.CONFORMANT.name, "broken-no-command", "hostile-billion-laughs"]
    again = build.build_all(docker_client, names)
    assert {name: image.id for name, image in again.items()} == {name: samples[name] for name in names}


def test_base_tag_follows_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    before = build.base_tag()
    monkeypatch.setitem(build.BASE_RECIPE, "packages", [*build.BASE_RECIPE["packages"], "curl"])  # type: ignore[misc]
    assert build.base_tag() != before


def test_failed_bootstrap_leaves_no_image(
    docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    mmdebstrap = build.ensure_mmdebstrap()
    if mmdebstrap is None:
        pytest.skip("mmdebstrap is not installed and cannot be installed here")
    monkeypatch.setattr(build, "MIRROR", "http://127.0.0.1:9/debian")  # nothing listens on the discard port
    tag = "psc-samples/base-test:failed-bootstrap"
    with pytest.raises(build.BuildError, match="mmdebstrap failed"):
        build.bootstrap_base(docker_client, tag, mmdebstrap)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)


# --- the conformant sample ------------------------------------------------------------------


def test_conformant_status_is_ready_json(conformant: tuple[Running, Path]) -> None:
    running, _ = conformant
    response = running.get("/status")
    assert response.status_code == 200
    assert envelope(response)["status"] == "OK"


@pytest.mark.parametrize("case", EXAMPLES)
def test_conformant_example_output_is_byte_identical(conformant: tuple[Running, Path], case: str) -> None:
    running, root = conformant
    response, out = run_case(running, root, DATA / "examples" / case)
    assert response.status_code == 200, response.text
    envelope(response)
    assert (out / OUTPUT_NAME).read_bytes() == (DATA / "examples" / case / OUTPUT_NAME).read_bytes()


@pytest.mark.parametrize("case", VALIDATION_ERRORS)
def test_conformant_validation_error_is_422_with_message(conformant: tuple[Running, Path], case: str) -> None:
    running, root = conformant
    response, _ = run_case(running, root, DATA / "validation-error" / case)
    assert response.status_code == 422
    expected = (DATA / "validation-error" / case / "message.txt").read_text().strip()
    assert expected.lower() in str(envelope(response)["message"]).lower()


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"data": "not json", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"data": "not json", "headers": {"Content-Type": "application/json"}}, 400),
        (
            {
                "data": json.dumps({"type": "file", "input": "/in", "output": "/out"}),
                "headers": {"Content-Type": "text/plain"},
            },
            400,
        ),
        ({"json": {"type": "url", "input": "/in", "output": "/out"}}, 400),
        ({"json": {"type": "file", "output": "/out"}}, 400),
        ({"json": {"type": "file", "input": 3, "output": "/out"}}, 400),
    ],
    ids=[
        "text-body-415",
        "bad-json-400",
        "json-under-text-type-400",
        "wrong-type-400",
        "no-input-400",
        "input-not-string-400",
    ],
)
def test_conformant_rejects_malformed_jobs(
    conformant: tuple[Running, Path], kwargs: dict[str, object], code: int
) -> None:
    running, _ = conformant
    response = running.post("/run", **kwargs)
    assert response.status_code == code
    envelope(response)


@pytest.mark.parametrize(
    ("method", "path", "code"), [("GET", "/nowhere", 404), ("GET", "/run", 405), ("PUT", "/status", 405)]
)
def test_conformant_unknown_routes_answer_the_envelope(
    conformant: tuple[Running, Path], method: str, path: str, code: int
) -> None:
    running, _ = conformant
    assert running.url
    response = requests.request(method, running.url + path, timeout=10)
    assert response.status_code == code
    envelope(response)


def test_conformant_shutdown_exits_zero(start: Any) -> None:
    with start(build.CONFORMANT.name) as running:
        running.wait_ready()
        response = running.post("/shutdown")
        assert response.status_code == 202
        envelope(response)
        assert running.wait_exit(timeout=15) == 0


# --- each broken sample shows its one defect --------------------------------------------------


def test_status_html(start: Any) -> None:
    with start("broken-status-html") as running:
        response = running.wait_ready()
        assert response.headers["Content-Type"].startswith("text/html")


def test_status_without_status_code(start: Any) -> None:
    with start("broken-status-no-statuscode") as running:
        body = running.wait_ready().json()
        assert "statusCode" not in body
        assert body["status"] == "OK"


def test_status_phrase_and_float_code(start: Any) -> None:
    with start("broken-status-phrase") as running:
        body = running.wait_ready().json()
        assert (body["statusCode"], body["status"]) == (200, "Ready")
        envelope(running.get("/nowhere"))  # only /status is broken
    with start("broken-status-code-float") as running:
        response = running.wait_ready()
        assert b'"statusCode": 200.0' in response.content
        assert response.json()["status"] == "OK"


def test_two_content_types(start: Any) -> None:
    with start("broken-two-content-types") as running:
        response = running.wait_ready()
        assert response.raw.headers.getlist("Content-Type") == [
            "text/html; charset=utf-8",
            "application/json",
        ]
        assert response.json()["statusCode"] == 200


@pytest.mark.parametrize(
    ("name", "html", "envelope_too"),
    [
        ("broken-404-html", ("GET", "/nowhere", 404), ("GET", "/run", 405)),
        ("broken-405-html", ("PUT", "/status", 405), ("GET", "/nowhere", 404)),
    ],
)
def test_flask_html_error_pages(
    start: Any, name: str, html: tuple[str, str, int], envelope_too: tuple[str, str, int]
) -> None:
    with start(name) as running:
        running.wait_ready()
        assert running.url
        method, path, code = html
        response = requests.request(method, running.url + path, timeout=10)
        assert response.status_code == code
        assert response.headers["Content-Type"].startswith("text/html")
        method, path, code = envelope_too  # the other error still answers the envelope
        response = requests.request(method, running.url + path, timeout=10)
        assert response.status_code == code
        envelope(response)


def test_ignores_port(start: Any) -> None:
    with start("broken-ignores-port", also_publish=(8080,)) as running:
        fixed = f"http://127.0.0.1:{host_port(running, 8080)}/status"
        deadline = time.monotonic() + 20
        while True:  # it does answer, but on 8080
            try:
                if requests.get(fixed, timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "nothing answered on 8080 either"
            time.sleep(0.1)
        with pytest.raises(requests.ConnectionError):
            running.get("/status")


def test_never_ready(start: Any) -> None:
    with start("broken-never-ready") as running:
        deadline = time.monotonic() + 20
        while True:  # the first answer, once the server listens
            with contextlib.suppress(requests.ConnectionError):
                seen = [running.get("/status").status_code]
                break
            assert time.monotonic() < deadline, "/status never answered"
            time.sleep(0.05)
        until = time.monotonic() + 1
        while time.monotonic() < until:
            seen.append(running.get("/status").status_code)
            time.sleep(0.1)
        assert set(seen) == {503}


def test_exit_at_start(start: Any) -> None:
    with start("broken-exit-at-start") as running:
        assert running.wait_exit(timeout=15) == 3


def test_run_without_output(start: Any, job_dirs: tuple[Path, Path]) -> None:
    inp, out = job_dirs
    stage_input(DATA / "examples" / "english", inp)
    with start("broken-run-no-output", mounts={inp: "/in", out: "/out"}) as running:
        running.wait_ready()
        response = running.post("/run", json={"type": "file", "input": "/in", "output": "/out"})
        assert response.status_code == 200
        envelope(response)
        assert list(out.iterdir()) == []


def test_run_error_not_json(start: Any) -> None:
    with start("broken-run-error-not-json") as running:
        running.wait_ready()
        response = running.post("/run", json={"type": "url", "input": "/in", "output": "/out"})
        assert response.status_code == 400
        assert response.headers["Content-Type"].startswith("text/plain")
        envelope(running.get("/status"))  # only the /run error path is broken


def test_shutdown_exit_1(start: Any) -> None:
    with start("broken-shutdown-exit-1") as running:
        running.wait_ready()
        assert running.post("/shutdown").status_code == 202
        assert running.wait_exit(timeout=15) == 1


def test_shutdown_ignored(start: Any) -> None:
    with start("broken-shutdown-ignored") as running:
        running.wait_ready()
        assert running.post("/shutdown").status_code == 202
        assert running.wait_exit(timeout=2) is None  # the conformant sample exits within ~1.2 s
        running.container.reload()
        assert running.container.status == "running"


def test_slow_start_becomes_ready_after_about_8_s(start: Any) -> None:
    with start("langid-slow-start") as running:
        begun = time.monotonic()
        running.wait_ready(timeout=20)
        took = time.monotonic() - begun
        assert 6 <= took <= 15, took
        assert b"can answer 200 from" in running.container.logs()


def test_gzip_sample_compresses_when_asked(start: Any) -> None:
    with start("langid-gzip") as running:
        response = running.wait_ready()  # requests asks for gzip, deflate
        assert response.headers.get("Content-Encoding") == "gzip"
        envelope(response)


def test_non_root_sample_runs_as_user_1000(
    docker_client: docker.DockerClient, samples: dict[str, str]
) -> None:
    user = docker_client.images.get(build.Sample("langid-non-root", "").tag).attrs["Config"]["User"]
    assert user.split(":")[0] == "1000"
