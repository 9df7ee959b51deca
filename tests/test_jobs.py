"""A /run job's directories and its outputs read back: unit tests against a fake archive
endpoint (shaped as Docker's, which these tests checked), then real sample images."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from harness import jobs
from harness.dockerengine.container import ModelContainer
from harness.dockerengine.localfs import ContainerRoot
from tests import runs
from tests.expect import CHECKS_MINI
from tests.harness_runs import HarnessRuns

RESULTS = b'{"language": "en"}\n'
HUGE = 32 * 2**30
READ_LIMIT = 64 * 2**20  # the fake engine fails a read of more than this


class LazyArchive(io.RawIOBase):
    """A TAR stream of headers and contents, a huge content made as it is read (never held)."""

    def __init__(self, members: list[tuple[tarfile.TarInfo, bytes | None]], limit: int = READ_LIMIT) -> None:
        self._parts: list[bytes | int] = []  # bytes, or a count of zero bytes
        for info, content in members:
            self._parts.append(info.tobuf(tarfile.PAX_FORMAT))
            if info.isreg():
                self._parts.append(content if content is not None else info.size)
                self._parts.append(b"\0" * (-info.size % tarfile.BLOCKSIZE))
        self._parts.append(b"\0" * 1024)
        self.sent = 0
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while self._parts and self._parts[0] in (b"", 0):
            self._parts.pop(0)
        if not self._parts:
            return 0
        part = self._parts[0]
        if isinstance(part, int):
            size = min(part, len(view))
            view[:size] = bytes(size)
            self._parts[0] = part - size
        else:
            size = min(len(part), len(view))
            view[:size] = part[:size]
            self._parts[0] = part[size:]
        self.sent += size
        assert self.sent <= self._limit, f"read {self.sent} bytes of the engine's archive"
        return size


def member(name: str, content: bytes | int = b"", *, kind: bytes = tarfile.REGTYPE, link: str = "") -> Any:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if kind == tarfile.REGTYPE:
        info.size = content if isinstance(content, int) else len(content)
    return info, content if isinstance(content, bytes) else None


class FakeEngine:
    """The archive endpoint of one container: each path's archive, and the calls made."""

    def __init__(self, archives: dict[str, list[Any]], limit: int = READ_LIMIT) -> None:
        self.archives = archives
        self.limit = limit
        self.calls: list[str] = []
        self.streams: list[LazyArchive] = []
        self.put: list[bytes] = []

    @contextlib.contextmanager
    def read_archive(self, path: str) -> Iterator[tarfile.TarFile | None]:
        self.calls.append(path)
        if path not in self.archives:
            yield None
            return
        stream = LazyArchive(self.archives[path], self.limit)
        self.streams.append(stream)
        with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|*") as archive:
            yield archive

    def read_file(self, path: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext(None)  # a remote engine: every read is an archive

    def put_archive(self, path: str, archive: Any) -> None:
        assert path == "/"
        self.put.append(archive if isinstance(archive, bytes) else b"".join(archive))

    def container(self) -> ModelContainer:
        return cast(ModelContainer, self)


DIRS = jobs.JobDirs("/psc-in-0123456789abcdef", "/psc-out-fedcba9876543210")
OUT = DIRS.output_dir.lstrip("/")


def directory_of(*members: Any) -> list[Any]:
    return [member(OUT, kind=tarfile.DIRTYPE), *members]


# -- the job's directories ---------------------------------------------------------------------------


def test_input_and_output_directories_are_unrelated_random_paths() -> None:
    engine = FakeEngine({})
    planned = [{"input.txt": b"hello"}, {"input.txt": b"bonjour"}]
    staged = jobs.stage_many(engine.container(), planned)
    (body,) = engine.put
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        entries = {info.name: info for info in archive.getmembers()}
    paths = set()
    for dirs in staged:
        # A model that writes next to its input, or guesses a sibling's name, finds nothing.
        assert dirs.output_dir != posixpath.join(posixpath.dirname(dirs.input_dir), "out")
        assert posixpath.dirname(dirs.input_dir) == posixpath.dirname(dirs.output_dir) == "/"
        in_token = dirs.input_dir.rsplit("-", 1)[1]
        out_token = dirs.output_dir.rsplit("-", 1)[1]
        assert in_token != out_token and len(in_token) == len(out_token) == 16
        paths |= {dirs.input_dir, dirs.output_dir}
        inside, outside = dirs.input_dir.lstrip("/"), dirs.output_dir.lstrip("/")
        assert entries[inside].isdir() and entries[inside].mode == 0o755
        assert entries[outside].isdir() and entries[outside].mode == 0o777
        assert entries[f"{inside}/input.txt"].isreg()
    assert len(paths) == 4
    assert set(entries) == {
        *(d.input_dir.lstrip("/") for d in staged),
        *(d.output_dir.lstrip("/") for d in staged),
        *(f"{d.input_dir.lstrip('/')}/input.txt" for d in staged),
    }


# -- outputs read back -------------------------------------------------------------------------------


def test_an_undeclared_huge_file_is_listed_by_its_header_and_never_read() -> None:
    # Docker archives a directory in name order: cache.bin's 32 GiB come before results.json.
    engine = FakeEngine(
        {
            DIRS.output_dir: directory_of(
                member(f"{OUT}/cache.bin", HUGE), member(f"{OUT}/results.json", RESULTS)
            ),
            f"{DIRS.output_dir}/results.json": [member("results.json", RESULTS)],
        }
    )
    outputs, undeclared = jobs.collect(engine.container(), DIRS, {"results.json": 0})
    written = outputs["results.json"]
    assert written.is_file() and written.content == RESULTS and written.size == len(RESULTS)
    assert written.sha256 == hashlib.sha256(RESULTS).hexdigest()
    assert undeclared == ["cache.bin"]
    assert sum(s.sent for s in engine.streams) < 2 * jobs.LIST_BYTES
    # One archive per declared output, one listing.
    assert engine.calls == [f"{DIRS.output_dir}/results.json", DIRS.output_dir]


def test_a_hard_link_in_the_output_directory_is_read_as_its_file() -> None:
    # The directory's archive sends the first name of the file as it, the second as a
    # hard link to it; the archive of the output's own path sends it as a file.
    engine = FakeEngine(
        {
            DIRS.output_dir: directory_of(
                member(f"{OUT}/.results.json.part", RESULTS),
                member(f"{OUT}/results.json", kind=tarfile.LNKTYPE, link=f"{OUT}/.results.json.part"),
            ),
            f"{DIRS.output_dir}/results.json": [member("results.json", RESULTS)],
        }
    )
    outputs, undeclared = jobs.collect(engine.container(), DIRS, {"results.json": 0})
    assert outputs["results.json"].is_file(), outputs["results.json"].describe()
    assert outputs["results.json"].content == RESULTS
    assert undeclared == [".results.json.part"]


def test_a_hard_link_whose_file_the_archive_does_not_hold_is_refused() -> None:
    engine = FakeEngine(
        {f"{DIRS.output_dir}/results.json": [member("results.json", kind=tarfile.LNKTYPE, link="etc/shadow")]}
    )
    written = jobs.read_outputs(engine.container(), DIRS.output_dir, {"results.json": 0})["results.json"]
    assert not written.is_file() and written.content is None
    assert "link" in written.describe() and "etc/shadow" in written.describe()


@pytest.mark.parametrize(
    ("kind", "seen"),
    [(tarfile.SYMTYPE, "link"), (tarfile.DIRTYPE, "directory"), (tarfile.FIFOTYPE, "special")],
)
def test_an_output_that_is_not_a_file_is_reported_as_what_it_is(kind: bytes, seen: str) -> None:
    members = [member("results.json", kind=kind, link="/etc/shadow" if kind == tarfile.SYMTYPE else "")]
    if kind == tarfile.DIRTYPE:
        members.append(member("results.json/inside.bin", HUGE))  # never read
    engine = FakeEngine({f"{DIRS.output_dir}/results.json": members})
    written = jobs.read_outputs(engine.container(), DIRS.output_dir, {"results.json": 0})["results.json"]
    assert written.kind == seen and written.content is None and written.sha256 is None


def test_each_declared_output_is_read_on_its_own() -> None:
    big = 100 * 2**20  # over the 32 MiB held, within the 256 MiB hashed
    engine = FakeEngine(
        {
            f"{DIRS.output_dir}/huge.bin": [member("huge.bin", 3 * 2**30)],
            f"{DIRS.output_dir}/big.bin": [member("big.bin", big)],
            f"{DIRS.output_dir}/results.json": [member("results.json", RESULTS)],
        },
        limit=2 * big,
    )
    caps = {"huge.bin": 0, "big.bin": 0, "results.json": 10, "missing.txt": 0}
    outputs = jobs.read_outputs(engine.container(), DIRS.output_dir, caps)
    assert engine.calls == [f"{DIRS.output_dir}/{name}" for name in caps]  # no listing
    # Past OUTPUT_SKIP: measured only, its stream closed after the header ...
    assert outputs["huge.bin"].size == 3 * 2**30 and outputs["huge.bin"].sha256 is None
    # ... which does not keep the next outputs from being read.
    assert outputs["big.bin"].size == big and outputs["big.bin"].content is None
    assert outputs["big.bin"].sha256 == hashlib.sha256(bytes(big)).hexdigest()
    assert outputs["results.json"].sha256 == hashlib.sha256(RESULTS).hexdigest()
    assert outputs["results.json"].content is None  # over its cap of 10 bytes: hashed, not held
    assert outputs["missing.txt"].kind == "missing"


def test_the_listing_waits_until_it_is_asked_for() -> None:
    listed: list[str] = []

    def lister() -> list[str]:
        listed.append(DIRS.output_dir)
        return ["a"]

    result = jobs.JobResult(cast(Any, None), DIRS.input_dir, DIRS.output_dir, dict, lister)
    assert result.outputs == {}
    assert listed == []
    assert result.undeclared == ["a"] and result.undeclared == ["a"] and listed == [DIRS.output_dir]


# -- a local engine: outputs read from the host, as safely ------------------------------------------


class LocalRoot(FakeEngine):
    """A container whose root the host can open (a directory standing in for /proc/<pid>/root)."""

    def __init__(self, root: Path, archives: dict[str, list[Any]] | None = None) -> None:
        super().__init__(archives or {})
        self.root = ContainerRoot(os.open(root, os.O_PATH | os.O_DIRECTORY))

    def read_file(self, path: str) -> contextlib.AbstractContextManager[tuple[int, Any] | None]:
        return self.root.regular_file(path)


def test_a_regular_output_on_a_local_engine_costs_no_engine_call(tmp_path: Path) -> None:
    (tmp_path / OUT).mkdir()
    (tmp_path / OUT / "results.json").write_bytes(RESULTS)
    (tmp_path / OUT / "big.bin").write_bytes(bytes(100))
    engine = LocalRoot(tmp_path)
    outputs = jobs.read_outputs(engine.container(), DIRS.output_dir, {"results.json": 0, "big.bin": 10})
    assert engine.calls == []
    assert outputs["results.json"].content == RESULTS and outputs["results.json"].size == len(RESULTS)
    assert outputs["results.json"].sha256 == hashlib.sha256(RESULTS).hexdigest()
    assert outputs["big.bin"].content is None and outputs["big.bin"].size == 100  # over its cap: hashed only
    assert outputs["big.bin"].sha256 == hashlib.sha256(bytes(100)).hexdigest()


def test_on_a_local_engine_anything_but_a_regular_file_is_left_to_the_engine(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"the host's")
    (tmp_path / OUT).mkdir()
    (tmp_path / OUT / "link.json").symlink_to(secret)
    os.mkfifo(tmp_path / OUT / "fifo.json")  # opened for reading, it would block: never opened
    (tmp_path / OUT / "dir.json").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "results.json").write_bytes(RESULTS)
    names = ("link.json", "fifo.json", "dir.json", "missing.json")
    engine = LocalRoot(tmp_path, {f"{DIRS.output_dir}/{n}": [member(n, kind=tarfile.SYMTYPE)] for n in names})
    outputs = jobs.read_outputs(engine.container(), DIRS.output_dir, dict.fromkeys(names, 0))
    assert engine.calls == [f"{DIRS.output_dir}/{n}" for n in names]  # each asked of the engine
    assert all(o.kind == "link" for o in outputs.values())  # what the (fake) engine said, nothing read here
    # A directory of the path that is a link, or a path with "..", is never walked either.
    (tmp_path / "psc-out-linked").symlink_to(tmp_path / "elsewhere")
    for path in ("/psc-out-linked/results.json", f"{DIRS.output_dir}/../elsewhere/results.json"):
        with engine.root.regular_file(path) as found:
            assert found is None, path
    # Without the harness's own directory (another process's root), nothing is read either.
    with LocalRoot(tmp_path / "elsewhere").root.regular_file(f"{DIRS.output_dir}/results.json") as found:
        assert found is None


@pytest.mark.docker
def test_a_local_engine_reads_a_regular_output_without_the_engine() -> None:
    import docker

    from harness.labels import labels
    from sample_models import build

    client = docker.from_env(version="auto")
    with ModelContainer(client, build.CONFORMANT.tag, labels=labels("jobs-test")) as container:
        assert container.container is not None
        dirs = jobs.stage(container, {"input.txt": b"Bonjour"})
        written = (
            f"printf hi > {dirs.output_dir}/results.json && ln -s /etc/hostname {dirs.output_dir}/link.json"
        )
        assert container.container.exec_run(["sh", "-c", written]).exit_code == 0
        asked: list[str] = []
        through_the_engine = container.read_archive

        def read_archive(path: str) -> Any:
            asked.append(path)
            return through_the_engine(path)

        container.read_archive = read_archive  # type: ignore[method-assign]
        outputs = jobs.read_outputs(container, dirs.output_dir, {"results.json": 0, "link.json": 0})
    client.close()
    assert outputs["results.json"].content == b"hi"
    assert outputs["link.json"].kind == "link" and outputs["link.json"].link_target == "/etc/hostname"
    assert asked == [f"{dirs.output_dir}/link.json"]  # the file read from the host, the link by the engine


# -- real images ---------------------------------------------------------------------------------------

RUN_EXAMPLES = {c for c in CHECKS_MINI if c.startswith("run.example[")}  # these runs have one case


@pytest.mark.docker
@pytest.mark.harness(runs.SAMPLE_RUNS["broken-ignores-output-dir"])
def test_a_model_that_writes_beside_its_input_fails(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["broken-ignores-output-dir"])
    assert result.returncode == 1, result
    assert result.with_outcome("failed") == {*RUN_EXAMPLES, "run.output-written"}, result
    for check_id in (*RUN_EXAMPLES, "run.output-written"):
        assert "not written" in result.checks()[check_id]["message"], result.checks()[check_id]


@pytest.mark.docker
@pytest.mark.harness(runs.SAMPLE_RUNS["langid-hard-link-output"])
def test_an_output_that_is_a_hard_link_is_a_file(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["langid-hard-link-output"])
    assert result.returncode == 0, result
    assert result.with_outcome("passed") == CHECKS_MINI, result


@pytest.mark.docker
@pytest.mark.harness(runs.SAMPLE_RUNS["hostile-huge-undeclared-output"])
def test_an_undeclared_huge_output_is_never_read(harness: HarnessRuns) -> None:
    result = harness(runs.SAMPLE_RUNS["hostile-huge-undeclared-output"])
    assert result.returncode == 0, result
    assert result.with_outcome("passed") == CHECKS_MINI, result
    checks = result.checks()
    for check_id in (*RUN_EXAMPLES, "run.output-written"):
        assert checks[check_id]["durationSeconds"] < 30, checks[check_id]


@pytest.mark.docker
@pytest.mark.harness(runs.UNDECLARED_LISTING)
def test_an_author_lists_the_undeclared_outputs_promptly(harness: HarnessRuns) -> None:
    result = harness(runs.UNDECLARED_LISTING)
    assert result.junit["test_undeclared_entries_are_listed_unread"] == "passed", result
    assert result.returncode == 0, result
