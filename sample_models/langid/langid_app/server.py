"""The HTTP server of the sample model: the contract of SPEC.md section 2.

One app serves every sample variant. ``PSC_SAMPLE_VARIANT`` (baked into each variant's
image) switches on exactly one deliberate defect, so that the conformance checks can be
shown to fail for the right reason.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import yaml
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from .model import InputRejected, LanguageIdentifier

APP_DIR = Path(__file__).resolve().parent.parent


class JobError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def envelope(
    code: int,
    message: str,
    *,
    mimetype: str = "application/json",
    with_code: bool = True,
    override: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {"statusCode": code, "status": HTTPStatus(code).phrase, "message": message}
    if not with_code:
        del body["statusCode"]
    body.update(override or {})
    return Response(json.dumps(body) + "\n", status=code, mimetype=mimetype)


HUGE_BODY_BYTES = 64 * 2**20
TRICKLE_SECONDS_PER_BYTE = 1.0
DIE_AFTER_SECONDS = 0.3
DEEP_JSON_LEVELS = 100_000
HUGE_OUTPUT_BYTES = 3 * 2**30
LITTER_PER_RUN = 50
HOSTILE_OUTPUTS = ("hostile-output-symlink", "hostile-output-fifo", "hostile-huge-output")
BIG_OUTPUT_BYTES = 33 * 2**20  # langid-big-output: more than the 32 MiB the harness holds of an output
UNDECLARED_BYTES = 32 * 2**30


def trickle(response: Response) -> Response:
    """The same answer, sent one byte at a time."""
    body = response.get_data()

    def drip() -> Any:
        for byte in body:
            time.sleep(TRICKLE_SECONDS_PER_BYTE)
            yield bytes([byte])

    return Response(drip(), status=response.status_code, mimetype=response.mimetype)


def write_hostile_output(variant: str, path: Path, text: str) -> None:
    """Something that is not a small regular file, where the declared output belongs."""
    path.unlink(missing_ok=True)
    if variant == "hostile-output-symlink":
        os.symlink("/etc/shadow", path)
    elif variant == "hostile-output-fifo":
        os.mkfifo(path)
    else:  # hostile-huge-output: sparse, so it costs no disk
        with path.open("wb") as out:
            out.write(text.encode())
            out.truncate(HUGE_OUTPUT_BYTES)


def write_padded(path: Path, result: dict[str, Any], fill: str = "A", size: int = BIG_OUTPUT_BYTES) -> None:
    """``result`` as the sample writes it, with a "padding" string of ``size`` ``fill``s,
    written a piece at a time (the tests write the expected file the same way)."""
    text = json.dumps({**result, "padding": ""}, indent=2, sort_keys=True) + "\n"
    head, tail = text.split('"padding": ""')
    with path.open("w", encoding="utf-8") as out:
        out.write(head + '"padding": "')
        for offset in range(0, size, 2**20):
            out.write(fill * min(2**20, size - offset))
        out.write('"' + tail)


HOG_BYTES = 512 * 2**20  # twice the 256M the sample declares
BURST_BYTES = 200 * 2**20  # langid-run-allocates: well within the 512M it declares


def hog(size: int = HOG_BYTES) -> None:
    """Touch ``size`` bytes of memory, then free them (more than model.yaml declares: the
    engine's out-of-memory killer ends the worker first)."""
    block = bytearray(size)
    for offset in range(0, size, 4096):
        block[offset] = 1
    del block


def litter(*job_dirs: Path) -> None:
    """Directories with guessable names, a file in each, next to the job's directories."""
    for parent in sorted({d.parent for d in job_dirs}):
        made = 0
        for number in range(1, 1000):
            sibling = parent / f"{number:03d}-x"
            try:
                sibling.mkdir()
            except FileExistsError:
                continue
            except OSError:
                break  # read-only or not ours: nothing to litter there
            with contextlib.suppress(OSError):
                (sibling / "litter.txt").write_text("left here by hostile-litters-jobs\n")
            made += 1
            if made == LITTER_PER_RUN:
                break


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    text = str(text).strip().upper().removesuffix("B")
    return int(float(text[:-1] if text[-1:] in units else text) * units.get(text[-1:], 1))


def create_app(variant: str, ready_at: float) -> Flask:
    # langid.yaml is always the sample's own model.yaml; the image's model.yaml may be a hostile one.
    metadata = yaml.safe_load((APP_DIR / "langid.yaml").read_text(encoding="utf-8"))
    inputs: dict[str, dict[str, Any]] = metadata["inputs"]
    outputs: dict[str, dict[str, Any]] = metadata["outputs"]
    app = Flask("langid")
    lock = threading.Lock()
    loaded: list[LanguageIdentifier] = []
    first_answer = threading.Lock()

    def model() -> LanguageIdentifier:
        # Like the reference server, the model is built on first use (normally /status).
        with lock:
            if not loaded:
                loaded.append(LanguageIdentifier.load(APP_DIR / "langid-model.json"))
            return loaded[0]

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if (variant, exc.code) in (("broken-404-html", 404), ("broken-405-html", 405)):
            return exc.get_response()  # werkzeug's own HTML page, as Flask answers without a handler
        return envelope(exc.code or 500, exc.description or "")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return envelope(500, f"internal error: {exc}")

    if variant == "langid-gzip":

        @app.after_request
        def compress(response: Response) -> Response:
            response.vary.add("Accept-Encoding")
            if response.is_streamed or request.accept_encodings.quality("gzip") <= 0:
                return response
            body = response.get_data()
            if body:
                response.set_data(gzip.compress(body, mtime=0))
                response.headers["Content-Encoding"] = "gzip"
            return response

    @app.get("/status")
    def status() -> Response:
        if variant == "broken-never-ready" or time.time() < ready_at:
            return envelope(503, "model is loading")
        try:
            model()
        except Exception as exc:  # loading failed: the contract says 500
            return envelope(500, f"model failed to load: {exc}")
        if variant == "broken-status-html":
            return envelope(200, "model is ready", mimetype="text/html")
        if variant == "hostile-huge-body":
            return envelope(200, "model is ready " + "x" * HUGE_BODY_BYTES)
        if variant == "hostile-trickle":
            return trickle(envelope(200, "model is ready"))
        if variant == "hostile-deep-json":
            body = "[" * DEEP_JSON_LEVELS + "]" * DEEP_JSON_LEVELS
            return Response(body, status=200, mimetype="application/json")
        if variant == "hostile-dies-after-first-answer":
            if not first_answer.acquire(blocking=False):
                threading.Event().wait()  # the container is going down: never answer again
            print("langid: answered /status once, exiting (sample defect)", flush=True)
            # The master's child_exit hook then ends the container with code 3 (not the
            # worker's own code: gunicorn reads a worker's 3 as "failed to boot").
            threading.Timer(DIE_AFTER_SECONDS, os._exit, (1,)).start()
        if variant == "broken-status-phrase":
            return envelope(200, "model is ready", override={"status": "Ready"})  # the model's state
        if variant == "broken-status-code-float":
            return envelope(200, "model is ready", override={"statusCode": 200.0})
        if variant == "broken-two-content-types":
            response = envelope(200, "model is ready")
            del response.headers["Content-Type"]
            response.headers.add("Content-Type", "text/html; charset=utf-8")
            response.headers.add("Content-Type", "application/json")
            return response
        return envelope(200, "model is ready", with_code=variant != "broken-status-no-statuscode")

    def run_error(code: int, message: str) -> Response:
        if variant == "broken-run-error-not-json":
            return Response(f"error {code}: {message}\n", status=code, mimetype="text/plain")
        return envelope(code, message)

    def read_job() -> tuple[Path, Path]:
        raw = request.get_data()
        try:
            job = json.loads(raw)
        except ValueError:
            # The reference server accepts JSON under any Content-Type; 415 is kept for
            # bodies that are not JSON and do not claim to be.
            if request.mimetype == "application/json":
                raise JobError(400, "the job configuration is not valid JSON") from None
            raise JobError(415, "the job configuration must be a JSON body") from None
        if not isinstance(job, dict):
            raise JobError(400, "the job configuration must be a JSON object")
        if job.get("type") != "file":
            raise JobError(400, 'the job type must be "file"')
        for key in ("input", "output"):
            if not isinstance(job.get(key), str) or not job[key]:
                raise JobError(400, f"'{key}' must be a directory path (a string)")
        output = Path(job["output"])
        if variant == "broken-ignores-output-dir":
            # Assumes the output directory is the input's sibling named "out".
            output = Path(os.path.join(os.path.dirname(job["input"]), "out"))
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JobError(400, f"cannot create the output directory: {exc.strerror}") from None
        return Path(job["input"]), output

    @app.post("/run")
    def run() -> Response:
        if variant == "hostile-crash-during-run":
            print("langid: crashing in the middle of /run (sample defect)", flush=True)
            os._exit(1)  # the master's child_exit hook then ends the container
        try:
            input_dir, output_dir = read_job()
            if variant == "hostile-litters-jobs":
                litter(input_dir, output_dir)
            ((name, spec),) = inputs.items()
            path = input_dir / name
            if not path.is_file():
                raise JobError(400, f"the input file '{name}' is missing from {input_dir}")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise JobError(400, f"cannot read '{name}': {exc.strerror}") from None
            limit = spec.get("maxSize")
            if limit is not None and len(data) > parse_size(limit):
                raise JobError(422, f"the input is larger than the {limit} limit")
            if variant == "broken-memory-hog":
                hog()
            if variant == "langid-run-allocates":
                hog(BURST_BYTES)  # a short peak, gone before the answer
            try:
                result = model().predict(data)
            except InputRejected as exc:
                raise JobError(422, str(exc)) from None
            if variant != "broken-run-no-output":
                (out_name,) = outputs
                text = json.dumps(result, indent=2, sort_keys=True) + "\n"
                try:
                    if variant == "broken-output-media-type":
                        # Declared application/json; written as YAML-like text.
                        text = "".join(f"{key}: {value}\n" for key, value in sorted(result.items()))
                    if variant == "langid-big-output":
                        write_padded(output_dir / out_name, result)
                    elif variant in HOSTILE_OUTPUTS:
                        write_hostile_output(variant, output_dir / out_name, text)
                    elif variant == "langid-hard-link-output":
                        # Written under another name first (one that the engine archives
                        # before results.json), then linked: two names, one regular file.
                        (output_dir / f".{out_name}.part").write_text(text)
                        os.link(output_dir / f".{out_name}.part", output_dir / out_name)
                    else:
                        (output_dir / out_name).write_text(text)
                    if variant == "hostile-huge-undeclared-output":
                        with (output_dir / "cache.bin").open("wb") as scratch:
                            scratch.truncate(UNDECLARED_BYTES)  # sparse: it costs no disk
                except OSError as exc:
                    raise JobError(400, f"cannot write '{out_name}': {exc.strerror}") from None
        except JobError as exc:
            return run_error(exc.code, exc.message)
        return envelope(200, f"identified {result['languageName']}")

    @app.post("/shutdown")
    def shutdown() -> Response:
        if variant != "broken-shutdown-ignored":
            # Answer first, then ask the gunicorn master (our parent) to stop gracefully.
            threading.Timer(0.1, os.kill, (os.getppid(), signal.SIGTERM)).start()
        return envelope(202, "shutting down")

    return app
