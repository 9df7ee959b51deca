"""Build the sample model images, from Debian's archive, without pulling any image.

    python -m sample_models.build          # base image, every sample, and the sample TAR

Idempotent: the base image is tagged with a hash of its recipe and skipped when present;
the samples rebuild through Docker's layer cache; the TAR is rewritten only when the
conformant image changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from docker.models.images import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TAR_DIR = ROOT / "build" / "samples"
NAMESPACE = "psc-samples"
LABEL = "org.psc-harness.sample"

# Everything that decides the base image's content; its hash is the image's tag.
BASE_RECIPE: dict[str, object] = {
    "suite": "bookworm",
    "variant": "minbase",
    "packages": ["python3", "python3-flask", "python3-yaml", "gunicorn"],
    "excludes": ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*"],
    "env": ["LANG=C.UTF-8", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "fallback": "python:3.11-slim-bookworm",
}
MIRROR = os.environ.get("PSC_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the gRPC samples add to the base: wheels from PyPI, downloaded on this machine (the
# engine needs no network) for the base's Python, unpacked in the image.
GRPC_WHEELS: dict[str, object] = {
    "requirements": ["grpcio==1.85.3", "protobuf==7.36.2"],
    "python": "3.11",  # bookworm's python3
}


@dataclass(frozen=True)
class Sample:
    name: str
    defect: str  # the one part of the contract it breaks; empty for conformant ones
    ready_after: int = 0
    hostile: str = ""  # how it tries to hang, flood or crash the harness
    log_flood_mib: int = 0
    on_demand: bool = False  # built only when named (python -m sample_models.build NAME)
    model_yaml: str = "model.yaml"  # the image's model.yaml, relative to langid/
    target: str = "app"  # the Dockerfile stage
    protocol: str = "http"  # "grpc": built from grpc_langid/, checked by the gRPC battery

    @property
    def tag(self) -> str:
        return f"{NAMESPACE}/{self.name}:latest"


SAMPLES: tuple[Sample, ...] = (
    Sample("langid", ""),
    Sample("langid-slow-start", "", ready_after=8),
    Sample("langid-gzip", ""),  # gzip bodies whenever Accept-Encoding allows it
    Sample("langid-non-root", "", target="non-root"),
    Sample("broken-status-html", "/status answers Content-Type text/html"),
    Sample("broken-status-no-statuscode", "the /status body lacks statusCode"),
    Sample("broken-status-phrase", 'the /status body says "status": "Ready", not the reason phrase "OK"'),
    Sample("broken-status-code-float", 'the /status body says "statusCode": 200.0, not the integer 200'),
    Sample(
        "broken-two-content-types", "/status sends two Content-Type headers: text/html, then application/json"
    ),
    Sample("broken-404-html", "an unknown route gets 404 as Flask's HTML page, not the JSON envelope"),
    Sample("broken-405-html", "a wrong method gets 405 as Flask's HTML page, not the JSON envelope"),
    Sample("broken-ignores-port", "listens on 8080 whatever PSC_MODEL_PORT says"),
    Sample("broken-never-ready", "/status answers 503 forever"),
    Sample("broken-exit-at-start", "exits with code 3 at start"),
    Sample("broken-missing-dependency", "exits with code 1 at start: a module it imports (torch) is missing"),
    Sample("broken-run-no-output", "/run answers 200 without writing the declared output"),
    Sample("broken-run-error-not-json", "/run errors answer text/plain"),
    Sample("broken-shutdown-exit-1", "/shutdown ends the process with exit code 1"),
    Sample("broken-shutdown-ignored", "/shutdown answers 202 but the process never exits"),
    Sample("broken-no-command", "the image has no CMD or ENTRYPOINT", target="no-command"),
    Sample("broken-memory-hog", "/run uses 512 MiB, twice the memory model.yaml declares"),
    Sample("broken-output-media-type", "/run writes results.json, declared application/json, as plain text"),
    Sample("langid-close-to-timeout", "", ready_after=11),  # by the clock, from its process's start
    # Each /run touches 200 MiB and frees it before answering, within a declared 512M.
    Sample("langid-run-allocates", "", model_yaml="variants/memory-512m.yaml"),
    Sample("hostile-log-flood", "", hostile="writes 256 MiB of log at start", log_flood_mib=256),
    Sample(
        "hostile-log-flood-1g", "", hostile="writes 1 GiB of log at start", log_flood_mib=1024, on_demand=True
    ),
    Sample("hostile-huge-body", "", hostile="/status answers a 64 MiB body"),
    Sample("hostile-trickle", "", hostile="/status trickles its answer, a byte a second"),
    Sample("hostile-crash-during-run", "", hostile="/run crashes the container (exit code 70)"),
    Sample("hostile-output-symlink", "", hostile="/run makes results.json a symbolic link to /etc/shadow"),
    Sample("hostile-output-fifo", "", hostile="/run makes results.json a FIFO, which blocks its reader"),
    Sample("hostile-huge-output", "", hostile="/run writes results.json as a 3 GiB sparse file"),
    Sample(
        "hostile-dies-after-first-answer",
        "",
        hostile="the container exits with code 3 0.3 s after its first /status answer",
    ),
    Sample("hostile-slow-headers", "", hostile="/status sends its headers a byte every 0.5 s"),
    Sample("hostile-deep-json", "", hostile="/status answers a JSON array nested 100000 deep"),
    Sample(
        "hostile-billion-laughs",
        "",
        hostile="model.yaml is a billion laughs: its aliases expand to 10**9 strings",
        model_yaml="hostile/billion-laughs.yaml",
    ),
    Sample(
        "hostile-litters-jobs",
        "",
        hostile="/run litters the parents of the job's input and output directories with directories",
    ),
    # Conformant: results.json padded to 33 MiB, more than the harness holds of an output.
    Sample("langid-big-output", "", model_yaml="big-output.yaml"),
    Sample("broken-ignores-output-dir", "/run writes its output to dirname(input)/out, not to its output"),
    Sample("langid-hard-link-output", ""),  # results.json a hard link to the file it wrote first
    Sample(
        "hostile-huge-undeclared-output",
        "",
        hostile="/run leaves an undeclared 32 GiB sparse file beside its results.json",
    ),
    Sample("grpc-langid", "", protocol="grpc"),
    Sample(
        "grpc-broken-status-500", "the model fails to load: Status answers status_code 500", protocol="grpc"
    ),
    Sample(
        "grpc-broken-batch-order", "Run answers a batch's outputs one place off their inputs", protocol="grpc"
    ),
    Sample("grpc-broken-shutdown-143", "exits with code 143 after Shutdown", protocol="grpc"),
    Sample("grpc-broken-never-exits", "Shutdown answers 200 but the process keeps running", protocol="grpc"),
    Sample(
        "grpc-shutdown-drops", "", protocol="grpc"
    ),  # conformant: exits 0 on Shutdown before answering (the connection drops)
)
HTTP_SAMPLES = tuple(s for s in SAMPLES if s.protocol == "http")
GRPC_SAMPLES = tuple(s for s in SAMPLES if s.protocol == "grpc")
CONFORMANT = SAMPLES[0]
CONFORMANT_TAR = TAR_DIR / f"{CONFORMANT.name}.tar"


class BuildError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"samples: {message}", flush=True)


def base_tag() -> str:
    digest = hashlib.sha256(json.dumps(BASE_RECIPE, sort_keys=True).encode()).hexdigest()
    return f"{NAMESPACE}/base:{digest[:16]}"


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_mmdebstrap() -> str | None:
    found = shutil.which("mmdebstrap")
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    say("installing mmdebstrap from Debian's archive")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "mmdebstrap"]):
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return shutil.which("mmdebstrap")


def bootstrap_base(client: docker.DockerClient, tag: str, mmdebstrap: str) -> None:
    repository, version = tag.split(":")
    with tempfile.TemporaryDirectory(prefix="psc-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        command = [
            mmdebstrap,
            "--mode=root",
            f"--variant={BASE_RECIPE['variant']}",
            "--include=" + ",".join(BASE_RECIPE["packages"]),  # type: ignore[arg-type]
            '--aptopt=Acquire::Check-Valid-Until "false"',
            *(f"--dpkgopt=path-exclude={pattern}" for pattern in BASE_RECIPE["excludes"]),  # type: ignore[attr-defined]
            str(BASE_RECIPE["suite"]),
            str(rootfs),
            MIRROR,
        ]
        say(f"bootstrapping Debian {BASE_RECIPE['suite']} into {tag} (about 30 s)")
        # The root file system goes to a file first: a failed bootstrap must never be
        # imported as a half-empty image.
        result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0 or not rootfs.exists() or rootfs.stat().st_size == 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            raise BuildError(f"mmdebstrap failed with exit code {result.returncode}:\n{tail}")
        changes = [f"ENV {item}" for item in BASE_RECIPE["env"]]  # type: ignore[attr-defined]
        client.api.import_image_from_file(str(rootfs), repository=repository, tag=version, changes=changes)


def build_base_from_registry(client: docker.DockerClient, tag: str) -> None:
    # Only for machines without apt but with a registry; the offline path is the default.
    say(f"mmdebstrap is not available: building {tag} from {BASE_RECIPE['fallback']}")
    with tempfile.TemporaryDirectory(prefix="psc-base-") as tmp:
        Path(tmp, "Dockerfile").write_text(
            f"FROM {BASE_RECIPE['fallback']}\nRUN pip install --no-cache-dir flask gunicorn pyyaml\n"
        )
        client.images.build(path=tmp, tag=tag, pull=True, rm=True, forcerm=True)


def verify_base(client: docker.DockerClient, tag: str) -> None:
    try:
        client.containers.run(tag, ["python3", "-c", "import flask, gunicorn, yaml"], remove=True)
    except docker.errors.ContainerError as exc:
        client.images.remove(tag, force=True)
        raise BuildError(f"{tag} was built but cannot import its packages; removed it: {exc}") from None


def build_base(client: docker.DockerClient) -> str:
    tag = base_tag()
    if image_exists(client, tag):
        say(f"{tag} is up to date")
        return tag
    mmdebstrap = ensure_mmdebstrap()
    if mmdebstrap:
        bootstrap_base(client, tag, mmdebstrap)
    else:
        build_base_from_registry(client, tag)
    verify_base(client, tag)
    say(f"built {tag}")
    return tag


def build_sample(client: docker.DockerClient, sample: Sample, base: str) -> Image:
    if sample.protocol == "grpc":
        return build_grpc_sample(client, sample, base)
    buildargs = {
        "BASE_IMAGE": base,
        "VARIANT": sample.name,
        "READY_AFTER": str(sample.ready_after),
        "LOG_FLOOD_MIB": str(sample.log_flood_mib),
        "MODEL_YAML": sample.model_yaml,
    }
    return build_image(client, HERE / "langid", sample, buildargs, target=sample.target)


def build_image(
    client: docker.DockerClient,
    context: Path,
    sample: Sample,
    buildargs: dict[str, str],
    target: str | None = None,
) -> Image:
    """One sample image from its build context, labelled with its name; a failure says why."""
    try:
        image, _log = client.images.build(
            path=str(context),
            tag=sample.tag,
            buildargs=buildargs,
            target=target,
            labels={LABEL: sample.name},
            pull=False,
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        log = "".join(str(item.get("stream", item.get("error", ""))) for item in exc.build_log)
        raise BuildError(f"building {sample.tag} failed: {exc.msg}\n{log[-2000:]}") from None
    say(f"{sample.tag} {image.short_id}")
    return image


def fetch_wheels(arch: str) -> Path:
    """The gRPC samples' wheels for the engine's architecture, downloaded once into build/."""
    recipe = {**GRPC_WHEELS, "arch": arch}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    target = TAR_DIR.parent / "wheels" / digest
    if (target / "complete").exists():
        return target
    say(f"downloading {', '.join(GRPC_WHEELS['requirements'])} ({arch}) from PyPI")  # type: ignore[arg-type]
    partial = target.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--implementation", "cp", "--python-version", str(GRPC_WHEELS["python"]),
        "--platform", f"manylinux2014_{arch}", "--dest", str(partial),
        *GRPC_WHEELS["requirements"],  # type: ignore[misc]
    ]  # fmt: skip
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise BuildError(f"pip download failed with exit code {result.returncode}:\n{result.stdout[-2000:]}")
    (partial / "complete").write_text(json.dumps(recipe))
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    return target


def engine_arch(client: docker.DockerClient) -> str:
    arch = str(client.info().get("Architecture", "x86_64"))
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def grpc_context(client: docker.DockerClient, context: Path) -> None:
    """The gRPC samples' build context: grpc_langid/, the model of langid/, the wire
    messages of the harness (so the image needs no harness installed) and the wheels."""
    shutil.copytree(HERE / "grpc_langid", context, ignore=shutil.ignore_patterns("data", "__pycache__"))
    (context / "langid_app").mkdir()
    for name in ("__init__.py", "model.py"):
        shutil.copy2(HERE / "langid" / "langid_app" / name, context / "langid_app" / name)
    shutil.copytree(HERE / "langid" / "train", context / "train")
    shutil.copy2(ROOT / "harness" / "grpcwire.py", context / "grpcwire.py")
    wheels = fetch_wheels(engine_arch(client))
    shutil.copytree(wheels, context / "wheels", ignore=shutil.ignore_patterns("complete"))


def build_grpc_sample(client: docker.DockerClient, sample: Sample, base: str) -> Image:
    with tempfile.TemporaryDirectory(prefix="psc-grpc-") as tmp:
        context = Path(tmp) / "context"
        grpc_context(client, context)
        return build_image(client, context, sample, {"BASE_IMAGE": base, "VARIANT": sample.name})


def save_tar(image: Image, target: Path) -> None:
    marker = target.with_suffix(".id")
    if target.exists() and marker.exists() and marker.read_text() == image.id:
        say(f"{target.relative_to(ROOT)} is up to date")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tar.partial")
    with partial.open("wb") as out:
        for chunk in image.save(named=True):
            out.write(chunk)
    partial.replace(target)
    marker.write_text(image.id)
    say(f"saved {image.tags[0]} to {target.relative_to(ROOT)} ({target.stat().st_size // 2**20} MiB)")


def build_all(client: docker.DockerClient, names: list[str] | None = None) -> dict[str, Image]:
    base = build_base(client)
    chosen = [s for s in SAMPLES if (s.name in names if names else not s.on_demand)]
    images = {sample.name: build_sample(client, sample, base) for sample in chosen}
    if CONFORMANT.name in images:
        save_tar(images[CONFORMANT.name], CONFORMANT_TAR)
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help="samples to build (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - {s.name for s in SAMPLES}
    if unknown:
        parser.error(f"unknown sample(s): {', '.join(sorted(unknown))}")
    try:
        client = docker.from_env(version="auto")
    except docker.errors.DockerException as exc:
        print(f"samples: cannot reach the Docker engine: {exc}", file=sys.stderr)
        return 2
    try:
        build_all(client, args.names)
    except (BuildError, subprocess.CalledProcessError, docker.errors.DockerException) as exc:
        print(f"samples: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
