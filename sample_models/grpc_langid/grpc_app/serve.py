"""The gRPC server of the sample model: service ModzyModel on ``$PSC_MODEL_PORT``.

One server for every gRPC variant. ``PSC_SAMPLE_VARIANT`` (baked into each variant's image)
switches on exactly one deliberate defect, so that the gRPC checks can be shown to fail
for the right reason.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import grpcwire
import yaml
from langid_app.model import InputRejected, LanguageIdentifier

APP_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PORT = "45000"
MESSAGE_LIMIT = 64 * 2**20  # a batch of maxBatchSize + 1 inputs at their 1M maxSize fits many times
REASONS = {200: "OK", 500: "Internal Server Error"}


def log(message: str) -> None:
    print(f"grpc-langid: {message}", flush=True)


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    text = str(text).strip().upper().removesuffix("B")
    return int(float(text[:-1] if text[-1:] in units else text) * units.get(text[-1:], 1))


def status_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The StatusResponse fields that describe the model, from model.yaml (specification 0.4)."""
    description = metadata.get("description") or {}
    resources = metadata.get("resources") or {}
    timeout = metadata.get("timeout") or {}
    features = metadata.get("features") or {}
    return {
        "model_info": grpcwire.ModelInfo(
            model_name=str(metadata.get("name") or ""),
            model_version=str(metadata.get("version") or ""),
            model_author=str(metadata.get("author") or ""),
            model_type=str(metadata.get("type") or ""),
            source=str(metadata.get("source") or ""),
        ),
        "description": grpcwire.ModelDescription(
            **{
                key: str(description.get(key) or "")
                for key in ("summary", "details", "technical", "performance")
            }
        ),
        "inputs": [
            grpcwire.ModelInput(
                filename=name,
                accepted_media_types=spec.get("acceptedMediaTypes") or [],
                max_size=str(spec.get("maxSize") or ""),
                description=str(spec.get("description") or ""),
            )
            for name, spec in (metadata.get("inputs") or {}).items()
        ],
        "outputs": [
            grpcwire.ModelOutput(
                filename=name,
                media_type=str(spec.get("mediaType") or ""),
                max_size=str(spec.get("maxSize") or ""),
                description=str(spec.get("description") or ""),
            )
            for name, spec in (metadata.get("outputs") or {}).items()
        ],
        "resources": grpcwire.ModelResources(
            required_ram=str((resources.get("memory") or {}).get("size") or ""),
            num_cpus=float((resources.get("cpu") or {}).get("count") or 0),
            num_gpus=int((resources.get("gpu") or {}).get("count") or 0),
        ),
        "timeout": grpcwire.ModelTimeout(
            status=str(timeout.get("status") or ""), run=str(timeout.get("run") or "")
        ),
        "features": grpcwire.ModelFeatures(
            adversarial_defense=bool(features.get("adversarialDefense")),
            batch_size=int(features.get("maxBatchSize") or 1),
            retrainable=bool(features.get("retrainable")),
            results_format=str(features.get("resultsFormat") or ""),
            drift_format=str(features.get("driftFormat") or ""),
            explanation_format=str(features.get("explanationFormat") or ""),
        ),
    }


class Model:
    """The ModzyModel service: the model loaded by the first Status, as the template does."""

    def __init__(self, variant: str, stop: threading.Event) -> None:
        self.variant = variant
        self.stop = stop
        metadata = yaml.safe_load((APP_DIR / "model.yaml").read_text(encoding="utf-8"))
        self.described = status_metadata(metadata)
        ((self.input_name, input_spec),) = metadata["inputs"].items()
        (self.output_name,) = metadata["outputs"]
        self.input_limit = parse_size(input_spec["maxSize"])
        self.lock = threading.Lock()
        self.loaded: LanguageIdentifier | None = None

    def Status(self, _request: Any, _context: Any) -> Any:
        with self.lock:
            first = self.loaded is None
            if first:
                try:
                    self.loaded = LanguageIdentifier.load(self.model_path())
                except (OSError, ValueError) as exc:
                    log(f"the model failed to load: {exc}")
                    return self.status(500, f"the model failed to load: {exc}")
                log("model loaded")
        return self.status(200, "model loaded" if first else "model already loaded")

    def model_path(self) -> Path:
        if self.variant == "grpc-broken-status-500":
            return APP_DIR / "missing-model.json"  # as an image built without its weights
        return APP_DIR / "langid-model.json"

    def status(self, code: int, message: str) -> Any:
        return grpcwire.StatusResponse(
            status_code=code, status=REASONS[code], message=message, **self.described
        )

    def Run(self, request: Any, _context: Any) -> Any:
        model = self.loaded
        if model is None:
            items = [
                grpcwire.output_item(error="the model is not loaded: Status loads it") for _ in request.inputs
            ]
            return grpcwire.RunResponse(
                status_code=200, status="OK", message="the model is not loaded", outputs=items
            )
        items = [self.one(model, dict(item.input)) for item in request.inputs]
        if self.variant == "grpc-broken-batch-order" and len(items) > 1:
            items = items[1:] + items[:1]  # each output one place off its input
        failed = sum(not item.success for item in items)
        log(f"Run: {len(items)} item(s), {failed} failed")
        return grpcwire.RunResponse(
            status_code=200,
            status="OK",
            message=f"{len(items) - failed} of {len(items)} item(s) processed",
            outputs=items,
        )

    def one(self, model: LanguageIdentifier, item: dict[str, bytes]) -> Any:
        data = item.get(self.input_name)
        if data is None:
            return grpcwire.output_item(error=f"the item has no '{self.input_name}' (it has {sorted(item)})")
        if len(data) > self.input_limit:
            return grpcwire.output_item(
                error=f"'{self.input_name}' is larger than its {self.input_limit} byte limit"
            )
        try:
            result = model.predict(data)
        except InputRejected as exc:
            return grpcwire.output_item(error=str(exc))
        text = json.dumps(result, indent=2, sort_keys=True) + "\n"
        return grpcwire.output_item({self.output_name: text.encode()})

    def Shutdown(self, _request: Any, _context: Any) -> Any:
        log("Shutdown: stopping")
        if self.variant == "grpc-shutdown-drops":
            log("stopped, without answering")
            os._exit(0)  # the connection ends as the process does: conformant too
        if self.variant != "grpc-broken-never-exits":
            self.stop.set()  # the main thread stops the server once this answer is sent
        return grpcwire.ShutdownResponse(status_code=200, status="OK", message="shutting down")


def handlers(model: Model) -> Any:
    methods = {}
    for path, (request_type, _response_type) in grpcwire.ROUTES.items():
        name = path.rsplit("/", 1)[1]
        methods[name] = grpc.unary_unary_rpc_method_handler(
            getattr(model, name),
            request_deserializer=request_type.FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )
    return grpc.method_handlers_generic_handler(grpcwire.SERVICE, methods)


def main() -> None:
    variant = os.environ.get("PSC_SAMPLE_VARIANT", "grpc-langid")
    port = os.environ.get("PSC_MODEL_PORT") or DEFAULT_PORT
    if not port.isdigit():
        log(f"PSC_MODEL_PORT must be a port number, got {port!r}")
        sys.exit(2)
    stop = threading.Event()
    # PID 1 ignores a signal it has no handler for: without this, `docker stop` waits 10 s.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        options=[
            ("grpc.max_send_message_length", MESSAGE_LIMIT),
            ("grpc.max_receive_message_length", MESSAGE_LIMIT),
        ],
    )
    server.add_generic_rpc_handlers((handlers(Model(variant, stop)),))
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    log(f"serving ModzyModel on port {port}")
    while not stop.wait(0.5):  # a bounded wait: the SIGTERM handler runs between two
        pass
    server.stop(grace=2).wait()  # the Shutdown answer, in flight, is sent first
    if variant == "grpc-broken-shutdown-143":
        log("exiting with code 143 (sample defect)")
        sys.exit(143)
    log("stopped")
    sys.exit(0)


if __name__ == "__main__":
    main()
