"""Every harness run the suite makes, in one catalog.

Each entry is one ``pytest --model-image ...`` subprocess (a ``Run``) or a few of them in a
given order (a ``Scenario``). Tests read different parts of the same run's outcome; a run is
never made twice. Timeouts are as short as the test allows.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import os
import re
import shutil
import signal
import tarfile
import time
from pathlib import Path

import docker
import docker.errors

from sample_models import build
from tests import engine
from tests.engine import CountingProxy
from tests.harness_api import LOADED_IMAGE_LABEL, USERNAME_ENV
from tests.harness_runs import Context, Handle, Result, Run, Scenario
from tests.registry import free_port
from tests.resources import DATA, REGISTRY_PASSWORD, REGISTRY_USER

LANGID = build.CONFORMANT.tag
WITH_DATA = "--model-data={data}"
WITH_ONE_CASE = "--model-data={mini}"  # one example, one validation-error case


def tag(name: str) -> str:
    return build.Sample(name, "").tag


def image(name: str) -> str:
    """A sample's tag as a run argument: the sample is built (or found up to date) when the
    run starts, so that no run waits for the others' samples."""
    return "{sample[" + name + "]}"


LANGID_ARG = image(build.CONFORMANT.name)


def image_present(ref: str) -> bool:
    client = engine.client()
    with contextlib.closing(client):
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
        return True


def copy_data(
    target: Path, *, english: bytes | None = None, empty_message: str | None = None, relayout: bool = False
) -> None:
    """The sample's test cases under ``target``, optionally with a changed expectation
    (``relayout``: french's expected JSON on one line, the same values)."""
    shutil.copytree(DATA, target)
    if english is not None:
        (target / "examples" / "english" / "results.json").write_bytes(english)
    if relayout:
        french = target / "examples" / "french" / "results.json"
        french.write_text(json.dumps(json.loads(french.read_text()), separators=(",", ":")))
    if empty_message is not None:
        (target / "validation-error" / "empty" / "message.txt").write_text(empty_message + "\n")


# One value differs from what the model writes for the english example.
WRONG_ENGLISH = (DATA / "examples" / "english" / "results.json").read_bytes().replace(b'"en"', b'"xx"', 1)
WRONG_MESSAGE = "a message the model never gives"


# -- the conformant sample -------------------------------------------------------------------

CONFORMANT = Run("conformant", ("--model-image", LANGID_ARG, WITH_DATA), cost=6)
TWO_IMAGES = Run(
    "two-images", ("--model-image", LANGID_ARG, "--model-image", image("broken-status-html")), cost=6
)
NO_HTML = Run("no-html", ("-p", "no:html", "--model-image", LANGID_ARG))
# Only the /status checks selected: the others never run, so the image cannot be conformant.
DESELECTED = Run("deselected", ("--model-image", LANGID_ARG, "-k", "status"))
NO_TERMINAL = Run("no-terminal", ("-p", "no:terminal", "--model-image", LANGID_ARG), verbose=False)

AUTHOR_TESTS = """
import json

def test_french_is_french(model_job):
    result = model_job({"input.txt": "Bonjour, je voudrais un café et un croissant.".encode()})
    assert result.exchange.status == 200
    assert json.loads(result.output("results.json").read_text())["language"] == "fr"

def test_metadata_is_known(model_server):
    assert model_server.metadata.inputs == ("input.txt",)

def test_the_server_facade(model_server):
    # What authors get: stable names, whatever moves inside the harness.
    assert model_server.label == "psc-samples/langid:latest"
    assert model_server.address.startswith("127.0.0.1:")
    answer = model_server.request("GET", "/status")
    assert (answer.status, answer.json()["statusCode"]) == (200, 200)
    assert len(model_server.container_id) == 64
    assert not hasattr(model_server, "container")  # the harness's inside is not handed out
"""
AUTHOR = Run("author", ("--model-image", LANGID_ARG), files=(("work/test_author.py", AUTHOR_TESTS),))

REVERSING = """
import pytest

@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    items.reverse()
"""
# Another plugin (pytest --ff, pytest-randomly...) may run /shutdown first.
REVERSED = Run(
    "reversed", ("--model-image", LANGID_ARG, WITH_ONE_CASE), files=(("work/conftest.py", REVERSING),), cost=6
)


def _link_tar(handle: Handle) -> dict[str, str]:
    """``x.tar`` (the conformant sample's TAR) in the working directory, ``data`` one level up."""
    handle.ctx.resources.sample(build.CONFORMANT.name)  # and its TAR
    try:
        os.link(build.CONFORMANT_TAR, handle.cwd / "x.tar")
    except OSError:
        shutil.copyfile(build.CONFORMANT_TAR, handle.cwd / "x.tar")
    (handle.cwd.parent / "data").symlink_to(DATA)
    handle.facts["image_id"] = build.CONFORMANT_TAR.with_suffix(".id").read_text()
    handle.facts["present_before"] = image_present(handle.facts["image_id"])
    return {}


def _after_tar(handle: Handle, result: Result) -> None:
    result.facts["present_after"] = image_present(result.facts["image_id"])


# Path options given with a space, from a subdirectory: ids must not depend on the rootdir.
TAR_SPACED = Run(
    "tar-spaced",
    ("--model-tar", "x.tar", "--model-data", "../data"),
    cwd="work/here",
    prepare=_link_tar,
    after=_after_tar,
    cost=15,
)


def _fresh_tar_after(name: str):  # type: ignore[no-untyped-def]
    def after(handle: Handle, result: Result) -> None:
        image_id = handle.ctx.resources.image_ids[name]
        result.facts["present_after"] = image_present(image_id)
        if result.facts["present_after"]:
            client = engine.client()
            with contextlib.closing(client), contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(image_id, force=True)

    return after


FRESH_TAR = Run(
    "fresh-tar", ("--model-tar={tar[fresh-removed]}",), after=_fresh_tar_after("fresh-removed"), cost=15
)
# Kept or not does not depend on the verdict: a tiny image (no command) loads in no time.
FRESH_TAR_KEPT = Run(
    "fresh-tar-kept",
    ("--model-tar={tar[tiny-kept]}", "--keep-image"),
    after=_fresh_tar_after("tiny-kept"),
    cost=4,
)

# -- the samples, each with its defect -------------------------------------------------------

# Status timeouts short enough to save time, long enough for a loaded machine to start the
# server (never-ready must answer 503 at least once before its timeout).
SAMPLE_ARGS: dict[str, tuple[str, ...]] = {
    "broken-ignores-port": ("--status-timeout=3s",),  # fails however slowly the server starts
    "broken-never-ready": ("--status-timeout=6s",),
    "broken-exit-at-start": ("--status-timeout=60s",),  # must fail at once, not at the timeout
    "broken-shutdown-ignored": ("--shutdown-timeout=1s",),
    "hostile-trickle": ("--status-timeout=8s",),  # room for a slow start before the body trickles
    "hostile-slow-headers": ("--status-timeout=4s",),
    # Ready 11 s after its process started, by the clock: the test owns its margin (29 s
    # of room on a loaded machine) and its warning (72 % of the timeout left, under 90 %).
    "langid-close-to-timeout": ("--status-timeout=40s", "--timeout-margin=90%"),
}
# The test cases matter only for samples whose defect is in /run; the others run without
# (their /run checks that need no case still run), or with one case of each kind.
SAMPLES_WITHOUT_DATA = {
    "broken-status-html",
    "broken-status-no-statuscode",
    "broken-shutdown-exit-1",
    "broken-shutdown-ignored",
    "hostile-huge-body",
    "hostile-trickle",
    "hostile-slow-headers",
    "hostile-deep-json",
    "hostile-log-flood",
    "langid-close-to-timeout",
}
# One case of each kind is enough to show a /run defect (and broken-memory-hog's worker is
# killed and rebooted at each /run).
SAMPLES_WITH_ONE_CASE = {
    "broken-memory-hog",
    "broken-run-no-output",
    "broken-run-error-not-json",
    "broken-output-media-type",
    "hostile-crash-during-run",
    "hostile-output-symlink",
    "hostile-output-fifo",
    "hostile-huge-output",
    "hostile-litters-jobs",
    "hostile-dies-after-first-answer",
    "langid-gzip",
    "langid-non-root",
}
MEASURED = {"hostile-huge-output", "hostile-billion-laughs"}


SLOW_SAMPLES = {"langid-close-to-timeout": 20.0, "broken-memory-hog": 12.0}  # seconds: started early


def sample_run(name: str, *extra: str, suffix: str = "", **kwargs: object) -> Run:
    data = (
        ()
        if name in SAMPLES_WITHOUT_DATA
        else (WITH_ONE_CASE if name in SAMPLES_WITH_ONE_CASE else WITH_DATA,)
    )
    return Run(
        name + suffix,
        ("--model-image", image(name), *data, *SAMPLE_ARGS.get(name, ()), *extra),
        measure_rss=name in MEASURED,
        cost=SLOW_SAMPLES.get(name, 4.0),
        waits=name == "langid-close-to-timeout",
        **kwargs,  # type: ignore[arg-type]
    )


SAMPLE_RUNS: dict[str, Run] = {
    name: sample_run(name)
    for name in (
        "broken-status-html",
        "broken-status-no-statuscode",
        "broken-ignores-port",
        "broken-never-ready",
        "broken-exit-at-start",
        "broken-run-no-output",
        "broken-run-error-not-json",
        "broken-shutdown-exit-1",
        "broken-shutdown-ignored",
        "broken-no-command",
        "broken-memory-hog",
        "broken-output-media-type",
        "langid-close-to-timeout",
        "hostile-huge-body",
        "hostile-trickle",
        "hostile-crash-during-run",
        "hostile-output-symlink",
        "hostile-output-fifo",
        "hostile-huge-output",
        "hostile-billion-laughs",
        "hostile-deep-json",
        "hostile-slow-headers",
        "hostile-litters-jobs",
        "langid-gzip",
        "langid-non-root",
    )
}
SLOW_HEADERS_SIGINT_IGNORED = sample_run("hostile-slow-headers", suffix="-sigint-ignored", ignore_sigint=True)
# An image that dies after its first answer must never pass: the same run, five times.
DIES_AFTER_FIRST_ANSWER = tuple(
    sample_run("hostile-dies-after-first-answer", suffix=f"-{n}") for n in range(1, 6)
)
# Ready 8 s after its start: a 7 s timeout fails it, with room for a slow start to answer 503s.
SLOW_START_SHORT = Run("slow-start-7s", ("--model-image", image("langid-slow-start"), "--status-timeout=7s"))


def _flood_data(handle: Handle) -> dict[str, str]:
    copy_data(handle.cwd / "data", english=WRONG_ENGLISH)  # a failing check reads the log tail
    proxy = CountingProxy(handle.dir / "engine.sock")
    handle.facts["proxy"] = proxy
    return {"proxy": proxy.url}


def _flood_written(handle: Handle) -> None:
    """Hold the check until the container has written its whole flood."""
    client = engine.client()
    with contextlib.closing(client):
        (record,) = handle.containers()
        container = client.containers.get(record.id)
        deadline = time.monotonic() + 120
        while b"wrote 256 MiB of log" not in container.logs(tail=3):
            assert time.monotonic() < deadline, "the flood did not end within 120 s"
            time.sleep(0.2)


def _flood_after(handle: Handle, result: Result) -> None:
    proxy = handle.facts.pop("proxy")
    result.facts["engine_bytes"] = proxy.received
    proxy.close()


LOG_FLOOD = Run(
    "hostile-log-flood",
    ("--model-image", image("hostile-log-flood"), "--model-data=data"),
    env=(("DOCKER_HOST", "{proxy}"),),
    prepare=_flood_data,
    pause_at="run.example[english]",
    on_pause=_flood_written,
    after=_flood_after,
    cost=15,
)

# -- test-only images: wrong statuses, no model.yaml ------------------------------------------


def _wrong_data(handle: Handle) -> dict[str, str]:
    copy_data(handle.cwd / "data", english=WRONG_ENGLISH, empty_message=WRONG_MESSAGE, relayout=True)
    return {}


WRONG_CODES = Run(
    "wrong-codes",
    ("--model-image", "{image[wrong-codes]}", "--model-data=data"),
    prepare=_wrong_data,
    cost=25,
)
NO_MODEL_YAML = Run("no-model-yaml", ("--model-image", "{image[no-model-yaml]}", WITH_DATA), cost=25)

# -- the per-image time bound -----------------------------------------------------------------

# An author's hook that never lets status.ready end (its container is started by then):
# only the bound can stop the run.
ENDLESS_CHECK = """
import time

def pytest_runtest_call(item):
    if item.nodeid.endswith("::status.ready"):
        time.sleep(600)
"""
BOUND_TIMEOUTS = {"status": 1.0, "run": 0.1, "shutdown": 0.1}
BOUND = Run(
    "per-image-bound",
    (
        "--model-image",
        LANGID_ARG,
        f"--status-timeout={BOUND_TIMEOUTS['status']:g}s",
        f"--run-timeout={BOUND_TIMEOUTS['run'] * 1000:.0f}ms",
        f"--shutdown-timeout={BOUND_TIMEOUTS['shutdown'] * 1000:.0f}ms",
    ),
    files=(("work/conftest.py", ENDLESS_CHECK),),
    ignore_sigint=True,  # the bound must not depend on SIGINT (ignored in most CI jobs)
    timeout=150,
    cost=70,
    waits=True,
)

# The same, in the preparation of the first check (its setup): the bound covers it too.
ENDLESS_SETUP = ENDLESS_CHECK.replace("pytest_runtest_call", "pytest_runtest_setup").replace(
    "::status.ready", "::image.model-yaml"
)
SETUP_BOUND = Run(
    "per-image-bound-setup",
    BOUND.args,
    files=(("work/conftest.py", ENDLESS_SETUP),),
    ignore_sigint=True,
    timeout=150,
    cost=70,
    waits=True,
)
# A FIFO given as model.yaml would block the preparation: refused unopened.
FIFO_YAML = Run(
    "model-yaml-fifo",
    ("--model-image", LANGID_ARG, "--model-yaml=model.yaml"),
    prepare=lambda handle: os.mkfifo(handle.cwd / "model.yaml") or {},
    cost=2,
)

# -- not evaluated, usage errors ----------------------------------------------------------------

UNKNOWN_IMAGE = Run("unknown-image", ("--model-image", "psc-test/does-not-exist:1"), cost=2)
NO_ENGINE = Run(
    "no-engine",
    ("--model-image", LANGID_ARG),
    env=(("DOCKER_HOST", "unix:///nonexistent/docker.sock"),),
    cost=2,
)
INVALID_YAML = Run(
    "invalid-model-yaml",
    ("--model-image", LANGID_ARG, "--model-yaml={dir}/work/model.yaml"),
    files=(
        (
            "work/model.yaml",
            (build.HERE / "langid" / "model.yaml").read_text().replace("status: 20s", "status: ''"),
        ),
    ),
    cost=2,
)
HUGE_DURATION_YAML = Run(
    "huge-duration-model-yaml",
    ("--model-image", LANGID_ARG, "--model-yaml=model.yaml"),
    files=(
        (
            "work/model.yaml",
            (build.HERE / "langid" / "model.yaml").read_text().replace("status: 20s", "status: 99999999h"),
        ),
    ),
    cost=2,
)
HUGE_DURATION_CLI = Run(
    "huge-duration-option", ("--model-image", LANGID_ARG, "--status-timeout=99999999h"), report=None, cost=1
)
REPORT_IS_A_FILE = Run(
    "report-dir-is-a-file",
    ("--model-image", LANGID_ARG, "--conformance-report=taken"),
    files=(("work/taken", "not a directory\n"),),
    report=None,
    cost=1,
)
DATA_WITHOUT_IMAGE = Run("data-without-image", (WITH_DATA,), cost=1)
YAML_WITHOUT_IMAGE = Run(
    "yaml-without-image",
    ("--model-yaml=model.yaml",),
    files=(("work/model.yaml", (build.HERE / "langid" / "model.yaml").read_text()),),
    cost=1,
)
BAD_OPTION = Run("bad-option", ("--model-image", "x", "--run-timeout", "soon"), report=None, cost=1)
BAD_INI = Run(
    "bad-ini",
    (),
    files=(("work/tox.ini", "[pytest]\nmodel_image = x\nmodel_status_timeout = 5 minutes\n"),),
    report=None,
    cost=1,
)
MISSING_YAML_PATH = Run(
    "missing-model-yaml", ("--model-image", LANGID_ARG, "--model-yaml=nowhere/model.yaml"), cost=2
)
MISSING_DATA_PATH = Run("missing-model-data", ("--model-image", LANGID_ARG, "--model-data=nowhere"), cost=2)
YAML_NOT_YAML = Run(
    "model-yaml-not-yaml",
    ("--model-image", LANGID_ARG, "--model-yaml=model.yaml"),
    files=(("work/model.yaml", "name: [unclosed\n"),),
    cost=2,
)
YAML_A_LIST = Run(
    "model-yaml-a-list",
    ("--model-image", LANGID_ARG, "--model-yaml=model.yaml"),
    files=(("work/model.yaml", "- just\n- a list\n"),),
    cost=2,
)


def _bad_data(problem: str):  # type: ignore[no-untyped-def]
    def prepare(handle: Handle) -> dict[str, str]:
        data = handle.cwd / "data"
        data.mkdir()
        if problem == "no-message-file":
            (data / "validation-error" / "empty").mkdir(parents=True)
            (data / "validation-error" / "empty" / "input.txt").write_text("")
        elif problem == "case-without-input":
            (data / "examples" / "lost").mkdir(parents=True)
            (data / "examples" / "lost" / "results.json").write_text("{}")
        elif problem == "same-case-twice":
            # One right, one wrong: under one id, the later result would hide the other.
            shutil.copytree(DATA / "examples" / "english", data / "examples" / "english")
            shutil.copytree(DATA / "examples" / "english", data / "example" / "english")
            (data / "example" / "english" / "results.json").write_bytes(WRONG_ENGLISH)
        elif problem == "empty-message":
            (data / "validation-error" / "empty").mkdir(parents=True)
            (data / "validation-error" / "empty" / "input.txt").write_text("")
            (data / "validation-error" / "empty" / "message.txt").write_text(" \n")
        elif problem == "bad-tolerance-file":
            shutil.copytree(DATA / "examples" / "english", data / "examples" / "english")
            (data / "examples" / "english" / "tolerance.json").write_text('{"rel": "tiny"}')
        elif problem == "fifo-input":
            shutil.copytree(DATA / "examples" / "english", data / "examples" / "english")
            (data / "examples" / "english" / "input.txt").unlink()
            os.mkfifo(data / "examples" / "english" / "input.txt")
        return {}

    return prepare


BAD_DATA = {
    problem: Run(
        f"bad-data-{problem}", ("--model-image", LANGID_ARG, "--model-data=data"), prepare=_bad_data(problem)
    )
    for problem in (
        "empty-data-dir",
        "no-message-file",
        "case-without-input",
        "same-case-twice",
        "empty-message",
        "fifo-input",
        "bad-tolerance-file",
    )
}
LONG_CASE_NAME = "c" * 253


def _long_case(handle: Handle) -> dict[str, str]:
    case = handle.cwd / "data" / "examples" / LONG_CASE_NAME
    shutil.copytree(DATA / "examples" / "english", case)
    return {}


LONG_CASE = Run(
    "long-case-name", ("--model-image", LANGID_ARG, "--model-data=data"), prepare=_long_case, cost=5
)


def _archive(kind: str):  # type: ignore[no-untyped-def]
    def prepare(handle: Handle) -> dict[str, str]:
        handle.ctx.resources.sample(build.CONFORMANT.name)  # and its TAR
        archive = handle.cwd / "model.tar"
        if kind == "empty":
            archive.write_bytes(b"")
        elif kind == "truncated":
            with build.CONFORMANT_TAR.open("rb") as whole:
                archive.write_bytes(whole.read(build.CONFORMANT_TAR.stat().st_size // 2))
        else:
            archive.write_text("model weights, surely\n" * 1000)
        return {}

    return prepare


BAD_ARCHIVES = {
    kind: Run(f"archive-{kind}", ("--model-tar={dir}/work/model.tar",), prepare=_archive(kind), cost=2)
    for kind in ("empty", "truncated", "not-an-archive")
}
MISSING_TAR_BESIDE_GOOD = Run(
    "missing-tar-beside-good", ("--model-tar={dir}/missing.tar", "--model-image", LANGID_ARG), cost=5
)
TWO_IMAGE_TAR = Run("two-image-tar", ("--model-tar={tar[two-images]}",), cost=8)

# -- configuration: ini file against command line -------------------------------------------------

INI = """[pytest]
model_image = psc-test/only-named-in-the-ini:1
model_data = data
model_report_dir = ini-reports
model_run_timeout = not-a-duration
"""


def _ini_data(handle: Handle) -> dict[str, str]:
    # The test cases next to the ini file, not in the working directory.
    (handle.dir / "work" / "data").symlink_to(handle.ctx.resources.mini_data())
    return {}


INI_AND_CLI = Run(
    "ini-and-command-line",
    ("--model-image", LANGID_ARG, "--run-timeout=20s"),
    files=(("work/pytest.ini", INI),),
    cwd="work/sub",
    report=None,
    prepare=_ini_data,
    cost=6,
)

# -- several images, pytest-xdist -------------------------------------------------------------------

XDIST_ARGS = ("--model-image", LANGID_ARG, "--model-image", image("broken-status-html"), WITH_ONE_CASE)
XDIST_LOADGROUP = Run("xdist-loadgroup", ("-n", "2", "--dist", "loadgroup", *XDIST_ARGS), cost=20)
XDIST_PLAIN = Run("xdist-plain", ("-n", "2", *XDIST_ARGS), cost=20)

# -- registry ---------------------------------------------------------------------------------------

AS_AUTHOR = ("--registry-username", REGISTRY_USER)
PULLED = Run(
    "registry-pull",
    ("--model-image", "{fresh[credentials]}", *AS_AUTHOR, WITH_DATA),
    secret=REGISTRY_PASSWORD,
    remove_images=("{fresh[credentials]}",),
    cost=12,
)
USERNAME_FROM_ENV = Run(
    "registry-username-env",
    ("--model-image", "{pushed[username-env]}"),
    env=((USERNAME_ENV, REGISTRY_USER),),
    secret=REGISTRY_PASSWORD,
    remove_images=("{pushed[username-env]}",),
    cost=6,
)
BY_DIGEST = Run(
    "registry-digest",
    ("--model-image", "{digest[digest]}", *AS_AUTHOR),
    secret=REGISTRY_PASSWORD,
    remove_images=("{digest[digest]}",),
    cost=12,
)
PASSWORD_STDIN = Run(
    "registry-password-stdin",
    ("--model-image", "{pushed[stdin]}", *AS_AUTHOR, "--registry-password-stdin"),
    stdin=REGISTRY_PASSWORD + "\n",
    secret=REGISTRY_PASSWORD,
    password_env=False,
    remove_images=("{pushed[stdin]}",),
    cost=6,
)


def _docker_config(handle: Handle) -> dict[str, str]:
    registry = handle.ctx.resources.registry()
    config = handle.dir / "docker-config"
    config.mkdir()
    token = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
    return {}


DOCKER_CONFIG = Run(
    "registry-docker-config",
    ("--model-image", "{pushed[docker-config]}"),
    env=(("DOCKER_CONFIG", "{dir}/docker-config"),),
    prepare=_docker_config,
    secret=REGISTRY_PASSWORD,
    password_env=False,
    remove_images=("{pushed[docker-config]}",),
    cost=6,
)
KEEP_IMAGE = Run(
    "registry-keep-image",
    ("--model-image", "{pushed[keep]}", *AS_AUTHOR, "--keep-image"),
    secret=REGISTRY_PASSWORD,
    remove_images=("{pushed[keep]}",),
    cost=6,
)


def _missing_tag(handle: Handle) -> dict[str, str]:
    return {"ref": handle.ctx.resources.pushed("errors").replace(":latest", ":no-such-tag")}


REGISTRY_ERRORS = {
    "wrong-password": Run(
        "registry-wrong-password",
        ("--model-image", "{pushed[errors]}", *AS_AUTHOR),
        secret="wrong-" + REGISTRY_PASSWORD,
        cost=3,
    ),
    "no-credentials": Run("registry-no-credentials", ("--model-image", "{pushed[errors]}"), cost=3),
    "missing-tag": Run(
        "registry-missing-tag",
        ("--model-image", "{ref}", *AS_AUTHOR),
        prepare=_missing_tag,
        secret=REGISTRY_PASSWORD,
        cost=3,
    ),
    "pull-never": Run(
        "registry-pull-never", ("--model-image", "{pushed[errors]}", "--pull", "never"), cost=3
    ),
}
UNREACHABLE_REGISTRY = Run(
    "registry-unreachable",
    ("--model-image", "127.0.0.1:{port}/psc/langid:latest"),
    prepare=lambda handle: {"port": str(free_port())},
    cost=2,
)
MALFORMED_REFERENCE = Run(
    "malformed-reference", ("--model-image", "127.0.0.1:5000/Psc/Langid:latest"), cost=2
)
USERNAME_WITHOUT_PASSWORD = Run(
    "username-without-password", ("--model-image", "x", *AS_AUTHOR), secret="", report=None, cost=1
)


def _pull_policies(ctx: Context) -> dict[str, Result]:
    """A reference the engine already holds: ``missing`` uses it, ``always`` pulls it anyway."""
    ref = ctx.resources.pushed("present")
    ctx.resources.sample(build.CONFORMANT.name)
    client = engine.client()
    client.images.get(LANGID).tag(ref)
    try:
        found: dict[str, Result] = {}
        for policy in ("missing", "always"):
            result = ctx.execute(
                Run(
                    f"pull-{policy}",
                    ("--model-image", ref, "--pull", policy, *AS_AUTHOR),
                    secret=REGISTRY_PASSWORD,
                )
            )
            result.facts["present_after"] = image_present(ref)
            found[policy] = result
        return found
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(ref)
        client.close()


PULL_POLICIES = Scenario("pull-policies", _pull_policies, cost=25)
GHCR_REF = "ghcr.io/org/team/model"


def _ghcr(ctx: Context) -> dict[str, Result]:
    """README's example reference, as a local tag of the conformant sample (never pulled)."""
    ref = f"{GHCR_REF}:{ctx.resources.tag_suffix}"
    ctx.resources.sample(build.CONFORMANT.name)
    client = engine.client()
    client.images.get(LANGID).tag(ref)
    try:
        return {"run": ctx.execute(Run("ghcr-reference", ("--model-image", ref)))}
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(ref)
        client.close()


GHCR = Scenario("ghcr-reference", _ghcr, cost=5)

# -- interruptions, kills, runs beside runs ----------------------------------------------------------


def interrupted(signum: signal.Signals, moment: str) -> Scenario:
    """``moment``: ``active`` (the harness has set up its handlers) or ``waiting`` (its
    container runs and /status is polled: langid-slow-start answers 200 only after ~8 s)."""

    def scenario(ctx: Context) -> dict[str, Result]:
        handle = ctx.launch(
            Run(
                f"interrupted-{signum.name}-{moment}",
                ("--model-image", image("langid-slow-start"), WITH_DATA),
            )
        )
        if moment == "active":
            handle.wait_until(handle.handler_installed, "active")
        else:
            handle.wait_until(handle.container_running, "running its container")
        handle.signal(signum)
        return {"run": ctx.finish(handle)}

    return Scenario(f"interrupted-{signum.name}-{moment}", scenario, cost=6)


INTERRUPTIONS = {
    (signum.name, moment): interrupted(signum, moment)
    for signum in (signal.SIGINT, signal.SIGTERM)
    for moment in ("active", "waiting")
}


def _killed_then_reaped(ctx: Context) -> dict[str, Result]:
    killed = ctx.launch(Run("killed", ("--model-image", image("langid-slow-start"))))
    killed.wait_until(killed.container_running, "running its container")
    assert killed.process is not None
    killed.process.kill()
    # Until it is waited for, the killed process is a zombie: no reaper may take its
    # container yet, so this sees exactly what SIGKILL left.
    client = engine.client()
    try:
        orphans = [r for r in killed.containers() if _exists(client, r.id)]
        first = ctx.finish(killed, expect_leftovers=True)
        first.facts["orphans"] = [r.name for r in orphans]
        after = ctx.execute(Run("after-killed", ("--model-image", LANGID_ARG)))
        # Whichever run reaped it (any later run may), it must be gone now.
        first.facts["orphans_left"] = [r.name for r in orphans if _exists(client, r.id)]
        for record in orphans:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(record.id, force=True, v=True)
        return {"killed": first, "next": after}
    finally:
        client.close()


def _exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return False
    return True


KILLED_THEN_REAPED = Scenario("killed-then-reaped", _killed_then_reaped, cost=8)


def _beside_a_live_run(ctx: Context) -> dict[str, Result]:
    slow = ctx.launch(
        Run(
            "slow-start-20s", ("--model-image", image("langid-slow-start"), "--status-timeout=20s", WITH_DATA)
        )
    )
    slow.wait_until(slow.container_running, "running its container")
    quick = ctx.execute(Run("quick-beside-slow", ("--model-image", LANGID_ARG)))
    return {"slow": ctx.finish(slow), "quick": quick}


BESIDE_A_LIVE_RUN = Scenario("beside-a-live-run", _beside_a_live_run, cost=16, waits=True)

# -- a job's directories and its outputs read back ----------------------------------------------------

JOB_OUTPUT_SAMPLES = (
    "broken-ignores-output-dir",
    "langid-hard-link-output",
    "hostile-huge-undeclared-output",
)
SAMPLES_WITH_ONE_CASE |= set(JOB_OUTPUT_SAMPLES)
# Before the per-output reads, the first /run check of hostile-huge-undeclared-output read
# 32 GiB: a timeout far below the per-image bound shows it in minutes, not 440 s.
SAMPLE_RUNS.update({name: sample_run(name, timeout=150) for name in JOB_OUTPUT_SAMPLES})

LISTING_TESTS = """
import time

def test_undeclared_entries_are_listed_unread(model_job):
    result = model_job({"input.txt": "Hello, how are you today? I hope all is well.".encode()})
    assert result.exchange.status == 200
    assert result.output("results.json").is_file()
    began = time.monotonic()
    assert result.undeclared == ["cache.bin"]  # 32 GiB, never read
    assert time.monotonic() - began < 10
"""
# An author's test asks for the names the battery never lists.
UNDECLARED_LISTING = Run(
    "undeclared-listing",
    ("--model-image", image("hostile-huge-undeclared-output")),
    files=(("work/test_listing.py", LISTING_TESTS),),
    timeout=150,
)


# -- comparing outputs: tolerances, the author's hook, kept outputs, outputs over 32 MiB ---------


def nudged(results: bytes) -> bytes:
    """The same expected results, "de" off in its 9th significant digit (-6.2408 -> -6.24080001)."""
    return re.sub(rb'("de": -?\d\.\d{4})(?=[,\n])', rb"\g<1>0001", results, count=1)


def _nudged_data(handle: Handle) -> dict[str, str]:
    """english nudged (exact: fails); german nudged with a tolerance file of its own (passes);
    french's expected language wrong (the hook accepts it); spanish as it is (the hook rejects it)."""
    data = handle.cwd / "data"
    copy_data(data)
    for case in ("english", "german"):
        expected = data / "examples" / case / "results.json"
        expected.write_bytes(nudged(expected.read_bytes()))
    (data / "examples" / "german" / "results.json.tolerance.json").write_text('{"rel": 1e-6, "abs": 0}\n')
    french = data / "examples" / "french" / "results.json"
    french.write_bytes(french.read_bytes().replace(b'"fr"', b'"xx"', 1))
    return {}


HOOK_REJECTS = "rejected by the author's own comparison of"
COMPARE_HOOK = f"""
from harness.compare import OutputVerdict

def pytest_model_compare_output(name, expected, actual, media_type, case_name, case_dir):
    if case_name == "spanish":
        return (False, "{HOOK_REJECTS} " + name)
    if case_name == "french":
        return OutputVerdict(True, "accepted by the author's own comparison")
    return None
"""
NUDGED = Run(
    "nudged-expectations",
    ("--model-image", LANGID_ARG, "--model-data=data", "--status-timeout=60s"),  # room for a loaded machine
    files=(("work/conftest.py", COMPARE_HOOK),),
    prepare=_nudged_data,
    cost=6,
)


def _english_nudged(handle: Handle) -> dict[str, str]:
    data = handle.cwd / "data"
    copy_data(data)
    expected = data / "examples" / "english" / "results.json"
    expected.write_bytes(nudged(expected.read_bytes()))
    return {}


NUDGED_REL_TOL = Run(
    "nudged-rel-tol",
    ("--model-image", LANGID_ARG, "--model-data=data", "--status-timeout=60s", "--rel-tol", "1e-6"),
    prepare=_english_nudged,
    cost=6,
)
BAD_TOLERANCE = Run("bad-tolerance", ("--model-image", "x", "--abs-tol", "-1"), report=None, cost=1)
BAD_TOLERANCE_INI = Run(
    "bad-tolerance-ini",
    (),
    files=(("work/tox.ini", "[pytest]\nmodel_image = x\nmodel_rel_tol = a little\n"),),
    report=None,
    cost=1,
)

BIG_OUTPUT_BYTES = 33 * 2**20  # as sample_models/langid/langid_app/server.py writes it


def write_padded(path: Path, results: bytes, fill: str) -> None:
    """The big-output sample's results.json for this expected results.json, padded with ``fill``."""
    text = json.dumps({**json.loads(results), "padding": ""}, indent=2, sort_keys=True) + "\n"
    head, tail = text.split('"padding": ""')
    with path.open("w", encoding="utf-8") as out:
        out.write(head + '"padding": "')
        for offset in range(0, BIG_OUTPUT_BYTES, 2**20):
            out.write(fill * min(2**20, BIG_OUTPUT_BYTES - offset))
        out.write('"' + tail)


def _big_data(handle: Handle) -> dict[str, str]:
    """Two cases with english's input: ``same`` expects what the model writes, ``different``
    the same size of "B" where the model writes "A"."""
    data = handle.cwd / "data"
    english = DATA / "examples" / "english"
    for case, fill in (("same", "A"), ("different", "B")):
        (data / "examples" / case).mkdir(parents=True)
        shutil.copyfile(english / "input.txt", data / "examples" / case / "input.txt")
        write_padded(data / "examples" / case / "results.json", (english / "results.json").read_bytes(), fill)
    shutil.copytree(DATA / "validation-error" / "empty", data / "validation-error" / "empty")
    return {}


BIG_OUTPUT = Run(
    "big-output",
    ("--model-image", image("langid-big-output"), "--model-data=data", "--status-timeout=60s"),
    prepare=_big_data,
    cost=10,
)
BIG_OUTPUT_COMPARE_BYTES = Run(
    "big-output-compare-bytes",
    (
        "--model-image",
        image("langid-big-output"),
        "--model-data=data",
        "--status-timeout=60s",
        "--compare-bytes",
    ),
    prepare=_big_data,
    cost=10,
)


# -- TAR archives: judged on what they hold --------------------------------------------------------


def write_damaged(source: Path, target: Path, kind: str) -> None:
    """``source`` (a ``docker save`` archive) copied to ``target`` with one defect that
    `docker load` would find only if the engine did not hold the image already."""
    manifest = json.loads(_member_bytes(source, "manifest.json"))
    config_name, layers = manifest[0]["Config"], manifest[0]["Layers"]
    with tarfile.open(source) as whole, tarfile.open(target, "w") as out:
        for member in whole:
            data = whole.extractfile(member) if member.isfile() else None
            if kind == "manifest-only" and member.name != "manifest.json":
                continue
            if kind == "no-base-layer" and member.name.startswith(layers[0].split("/")[0]):
                continue  # the base layer's directory, as if it were left out
            if kind == "tampered-layer" and member.name == layers[1] and data is not None:
                content = bytearray(data.read())
                content[len(content) // 2] ^= 1  # one bit of one file in the layer
                data = io.BytesIO(bytes(content))
            if kind == "forged-config" and member.name == config_name and data is not None:
                # Another image's config under the sample's id: a run must not judge the
                # sample (in the engine under that id) in its place.
                config = json.loads(data.read())
                config["config"]["Env"] = [*config["config"].get("Env", []), "FORGED=1"]
                content = json.dumps(config).encode()
                member.size = len(content)
                data = io.BytesIO(content)
            out.addfile(member, data)


def _member_bytes(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as whole:
        extracted = whole.extractfile(name)
        assert extracted is not None
        return extracted.read()


def _damaged_tar(kind: str):  # type: ignore[no-untyped-def]
    def prepare(handle: Handle) -> dict[str, str]:
        handle.ctx.resources.sample(build.CONFORMANT.name)  # and its TAR
        write_damaged(build.CONFORMANT_TAR, handle.cwd / "model.tar", kind)
        handle.facts["image_id"] = build.CONFORMANT_TAR.with_suffix(".id").read_text()
        handle.facts["present_before"] = image_present(handle.facts["image_id"])
        return {}

    return prepare


DAMAGED_TARS = {
    kind: Run(
        f"tar-{kind}",
        ("--model-tar=model.tar", WITH_ONE_CASE),
        prepare=_damaged_tar(kind),
        after=_after_tar,
        cost=3,
    )
    for kind in ("manifest-only", "no-base-layer", "tampered-layer", "forged-config")
}


def _gzipped_tar(handle: Handle) -> dict[str, str]:
    saved = Path(handle.ctx.resources.tar("tiny-gzipped"))
    handle.facts["image_id"] = handle.ctx.resources.image_ids["tiny-gzipped"]
    with saved.open("rb") as plain, gzip.open(handle.cwd / "model.tar.gz", "wb") as packed:
        shutil.copyfileobj(plain, packed)
    return {}


# docker save | gzip: checked through the decompression, then loaded and removed.
GZIPPED_TAR = Run(
    "tar-gzipped", ("--model-tar=model.tar.gz",), prepare=_gzipped_tar, after=_after_tar, cost=4
)
# Paths that are no archive file: a pipe (standard input) and a directory.
TAR_STDIN = Run("tar-stdin", ("--model-tar=/dev/stdin",), stdin="model weights, surely\n", cost=2)
TAR_DIRECTORY = Run("tar-directory", ("--model-tar={dir}/work",), cost=2)


def _killed_loading_tar(ctx: Context) -> dict[str, Result]:
    """A run SIGKILLed as soon as its TAR's image is in the engine: its mark is already there,
    and the next run removes both."""
    tar = ctx.resources.tar("fresh-killed")
    image_id = ctx.resources.image_ids["fresh-killed"]
    client = engine.client()
    try:

        def loaded() -> bool:
            try:
                client.images.get(image_id)
            except docker.errors.ImageNotFound:
                return False
            return True

        def marks() -> list[str]:
            return [
                v.name for v in client.volumes.list(filters={"label": f"{LOADED_IMAGE_LABEL}={image_id}"})
            ]

        killed = ctx.launch(Run("killed-loading-tar", (f"--model-tar={tar}",)))
        killed.wait_until(loaded, "loading its image", timeout=180)
        marked = marks()  # at once: the harness is still preparing the image
        assert killed.process is not None
        killed.process.kill()
        first = ctx.finish(killed, expect_leftovers=True)
        first.facts.update(marks_when_loaded=marked, marks_after_kill=marks(), loaded_after_kill=loaded())
        after = ctx.execute(Run("after-killed-loading-tar", ("--model-image", LANGID_ARG)))
        # Whichever run reaped them (any later run may), they must be gone now.
        first.facts.update(marks_left=marks(), image_left=loaded())
        for name in marks():
            with contextlib.suppress(docker.errors.NotFound):
                client.volumes.get(name).remove(force=True)
        for record in killed.containers():
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(record.id, force=True, v=True)
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image_id, force=True)
        return {"killed": first, "next": after}
    finally:
        client.close()


KILLED_LOADING_TAR = Scenario("killed-loading-tar", _killed_loading_tar, cost=10)


# -- what a person sees: checks not run, told apart from skips ---------------------------------------

# Under xdist (reports travel from the worker) and with -rs: the checks not run are listed too.
NOT_RUN_XDIST_RS = sample_run("broken-exit-at-start", "-n", "1", "-rs", suffix="-xdist-rs")


# -- the platform rehearsal's figures; what a model's exit says ----------------------------------

# Ready in under a second, a battery of a second or two: its figures rest on few samples.
REHEARSAL_QUICK = Run("rehearsal-quick", ("--model-image", LANGID_ARG, "--status-timeout=60s"), cost=4)
SAMPLES_WITHOUT_DATA.add("broken-missing-dependency")  # it never starts
SAMPLES_WITH_ONE_CASE.add("langid-run-allocates")  # each /run touches 200 MiB, then frees it
SAMPLE_ARGS["langid-run-allocates"] = ("--status-timeout=60s",)  # its start is not what is measured
SAMPLE_RUNS.update({name: sample_run(name) for name in ("broken-missing-dependency", "langid-run-allocates")})


# -- the envelope: reason phrases, integer codes, one Content-Type, 404 and 405 ------------------

# Their defects are outside the /run jobs: no test cases needed.
ENVELOPE_SAMPLES = (
    "broken-status-phrase",
    "broken-status-code-float",
    "broken-two-content-types",
    "broken-404-html",
    "broken-405-html",
)
SAMPLES_WITHOUT_DATA.update(ENVELOPE_SAMPLES)
SAMPLE_RUNS.update({name: sample_run(name) for name in ENVELOPE_SAMPLES})


# -- signals whose KeyboardInterrupt is lost; a Ctrl-C as a container is created ------------------

# Python runs a signal's handler in whatever the main thread executes next; an exception it
# raises in a finalizer is discarded. This conftest drops an io object whose close(), run as
# its finalizer, sends the signal, when the check PSC_TEST_SIGNAL_AT begins.
LOST_SIGNAL_CONFTEST = """
import io, os

class Dropped(io.RawIOBase):
    def close(self):
        os.kill(os.getpid(), int(os.environ["PSC_TEST_SIGNAL"]))
        super().close()

def pytest_runtest_call(item):
    if item.nodeid.endswith("::" + os.environ["PSC_TEST_SIGNAL_AT"]):
        Dropped()
"""
LOST_SIGNALS = {
    (signum.name, check): Run(
        f"lost-{signum.name}-at-{check}",
        ("--model-image", LANGID_ARG, WITH_DATA),
        files=(("work/conftest.py", LOST_SIGNAL_CONFTEST),),
        env=(("PSC_TEST_SIGNAL", str(int(signum))), ("PSC_TEST_SIGNAL_AT", check)),
        cost=5,
    )
    for signum, check in (
        (signal.SIGINT, "status.schema"),
        (signal.SIGINT, "shutdown.exit-code"),
        (signal.SIGTERM, "status.schema"),
    )
}
# Ctrl-C as the harness's own HTTP client closes its first /status answer of status.ready:
# while the model is still loading, the run must stop there and then.
SIGINT_IN_STATUS_POLL_CONFTEST = """
import http.client, os, signal, threading

armed = []
init, close = http.client.HTTPResponse.__init__, http.client.HTTPResponse.close

def traced_init(self, sock, *args, **kwargs):
    self.psc_own = type(sock).__module__ == "harness.http"  # the model client's, not the engine's
    init(self, sock, *args, **kwargs)

def signalling_close(self):
    if armed and getattr(self, "psc_own", False) and threading.current_thread() is threading.main_thread():
        armed.clear()
        os.kill(os.getpid(), signal.SIGINT)
    close(self)

http.client.HTTPResponse.__init__ = traced_init
http.client.HTTPResponse.close = signalling_close

def pytest_runtest_call(item):
    if item.nodeid.endswith("::status.ready"):
        armed.append(True)
"""
SIGINT_IN_STATUS_POLL = Run(
    "sigint-in-status-poll",
    ("--model-image", image("langid-slow-start"), WITH_DATA),
    files=(("work/conftest.py", SIGINT_IN_STATUS_POLL_CONFTEST),),
    cost=6,
)
# Ctrl-C while the engine's answer to the container's creation is on its way: the container
# exists, but the harness never got its id.
SIGINT_AS_CREATED_CONFTEST = """
import os, signal
from docker.models.containers import ContainerCollection

create = ContainerCollection.create

def interrupted_create(self, *args, **kwargs):
    try:
        return create(self, *args, **kwargs)
    finally:
        os.kill(os.getpid(), signal.SIGINT)

ContainerCollection.create = interrupted_create
"""
SIGINT_AS_CREATED = Run(
    "sigint-as-container-created",
    ("--model-image", LANGID_ARG),
    files=(("work/conftest.py", SIGINT_AS_CREATED_CONFTEST),),
    cost=3,
)


# -- the gRPC variant ---------------------------------------------------------------------------

GRPC_ARGS: dict[str, tuple[str, ...]] = {
    # A failed load answers 500 until the timeout; 20 s: its server must start first, on a busy machine.
    "grpc-broken-status-500": ("--status-timeout=20s",),
    "grpc-broken-never-exits": ("--shutdown-timeout=2s",),
}


def grpc_run(name: str, *extra: str, suffix: str = "") -> Run:
    return Run(
        name + suffix,
        ("--model-protocol=grpc", "--model-image", image(name), WITH_DATA, *GRPC_ARGS.get(name, ()), *extra),
        cost=4,
    )


GRPC_RUNS = {sample.name: grpc_run(sample.name) for sample in build.GRPC_SAMPLES}
GRPC_FROM_TAR = Run(
    "grpc-langid-tar", ("--model-protocol=grpc", "--model-tar={tar[grpc-langid]}", WITH_DATA), cost=6
)
# An author's own test of a gRPC model, through the model_server facade's transport.
GRPC_AUTHOR_TESTS = """
def test_status_through_the_transport(model_server):
    answer = model_server.transport.status(timeout=10)
    assert answer.ok and answer.message.status_code == 200
    assert [i.filename for i in answer.message.inputs] == list(model_server.metadata.inputs)


def test_a_run_through_the_transport(model_server):
    answer = model_server.transport.run([{"input.txt": b"the cat sat on the mat"}], timeout=10)
    assert answer.ok and len(answer.message.outputs) == 1 and answer.message.outputs[0].success
"""
GRPC_AUTHOR = Run(
    "grpc-author",
    ("--model-protocol=grpc", "--model-image", image("grpc-langid")),
    files=(("work/test_author.py", GRPC_AUTHOR_TESTS),),
    cost=4,
)
# Without model.yaml, as chassis builds images: the Status answer's metadata is used.
GRPC_NO_MODEL_YAML = Run(
    "grpc-no-model-yaml",
    ("--model-protocol=grpc", "--model-image", "{image[grpc-no-model-yaml]}", WITH_DATA),
    cost=8,
)
# A gRPC image checked as HTTP, and the HTTP sample checked as gRPC: one line, not evaluated.
GRPC_AS_HTTP = Run("grpc-as-http", ("--model-image", image("grpc-langid"), WITH_DATA), cost=3)
HTTP_AS_GRPC = Run("http-as-grpc", ("--model-protocol=grpc", "--model-image", LANGID_ARG, WITH_DATA), cost=3)


def _catalog() -> list[Run | Scenario]:
    found: list[Run | Scenario] = []
    for value in list(globals().values()):
        values = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else [value]
        found += [v for v in values if isinstance(v, Run | Scenario) and v not in found]
    return found


ALL = _catalog()
