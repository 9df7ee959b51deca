"""The messages of the gRPC model contract (specification 0.4), built at import.

Wire format: service ``ModzyModel`` (no proto package, so the paths are
``/ModzyModel/Status``, ``/ModzyModel/Run`` and ``/ModzyModel/Shutdown``, each unary), with
the field names, numbers and types of the public ``model.proto`` of chassisml/chassis
(Apache-2.0, ``protos/chassis/protos/v1/model.proto``), which modzy/grpc-model-template
compiles too. The descriptor is assembled here in Python rather than generated, so that
neither ``protoc`` nor generated code is needed, and the classes are whatever the installed
protobuf runtime makes of it.

This module imports only ``google.protobuf``: the gRPC sample images carry a copy of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

SERVICE = "ModzyModel"
FILE_NAME = "psc_harness/modzy_model.proto"  # our own name: the pool keys files by it
STATUS_PATH = f"/{SERVICE}/Status"
RUN_PATH = f"/{SERVICE}/Run"
SHUTDOWN_PATH = f"/{SERVICE}/Shutdown"
ERROR_KEY = "error"  # a failed output item's map holds its message under this key

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BYTES, _BOOL, _INT32, _FLOAT, _MESSAGE = (
    _F.TYPE_STRING,
    _F.TYPE_BYTES,
    _F.TYPE_BOOL,
    _F.TYPE_INT32,
    _F.TYPE_FLOAT,
    _F.TYPE_MESSAGE,
)

# message -> its fields as (name, number, type, repeated, message type name or "").
# Numbers are the wire format: never renumber.
MESSAGES: Mapping[str, tuple[tuple[str, int, int, bool, str], ...]] = MappingProxyType(
    {
        "StatusRequest": (),
        "ModelInfo": (
            ("model_name", 1, _STRING, False, ""),
            ("model_version", 2, _STRING, False, ""),
            ("model_author", 3, _STRING, False, ""),
            ("model_type", 4, _STRING, False, ""),
            ("source", 5, _STRING, False, ""),
        ),
        "ModelDescription": (
            ("summary", 1, _STRING, False, ""),
            ("details", 2, _STRING, False, ""),
            ("technical", 3, _STRING, False, ""),
            ("performance", 4, _STRING, False, ""),
        ),
        "ModelInput": (
            ("filename", 1, _STRING, False, ""),
            ("accepted_media_types", 2, _STRING, True, ""),
            ("max_size", 3, _STRING, False, ""),
            ("description", 4, _STRING, False, ""),
        ),
        "ModelOutput": (
            ("filename", 1, _STRING, False, ""),
            ("media_type", 2, _STRING, False, ""),
            ("max_size", 3, _STRING, False, ""),
            ("description", 4, _STRING, False, ""),
        ),
        "ModelResources": (
            ("required_ram", 1, _STRING, False, ""),
            ("num_cpus", 2, _FLOAT, False, ""),
            ("num_gpus", 3, _INT32, False, ""),
        ),
        "ModelTimeout": (
            ("status", 1, _STRING, False, ""),
            ("run", 2, _STRING, False, ""),
        ),
        "ModelFeatures": (
            ("adversarial_defense", 1, _BOOL, False, ""),
            ("batch_size", 2, _INT32, False, ""),
            ("retrainable", 3, _BOOL, False, ""),
            ("results_format", 4, _STRING, False, ""),
            ("drift_format", 5, _STRING, False, ""),
            ("explanation_format", 6, _STRING, False, ""),
        ),
        "StatusResponse": (
            ("status_code", 1, _INT32, False, ""),
            ("status", 2, _STRING, False, ""),
            ("message", 3, _STRING, False, ""),
            ("model_info", 4, _MESSAGE, False, "ModelInfo"),
            ("description", 5, _MESSAGE, False, "ModelDescription"),
            ("inputs", 6, _MESSAGE, True, "ModelInput"),
            ("outputs", 7, _MESSAGE, True, "ModelOutput"),
            ("resources", 8, _MESSAGE, False, "ModelResources"),
            ("timeout", 9, _MESSAGE, False, "ModelTimeout"),
            ("features", 10, _MESSAGE, False, "ModelFeatures"),
        ),
        "InputItem": (("input", 1, _MESSAGE, True, "InputItem.InputEntry"),),
        "RunRequest": (
            ("inputs", 1, _MESSAGE, True, "InputItem"),
            ("detect_drift", 2, _BOOL, False, ""),
            ("explain", 3, _BOOL, False, ""),
        ),
        "OutputItem": (
            ("output", 1, _MESSAGE, True, "OutputItem.OutputEntry"),
            ("success", 2, _BOOL, False, ""),
        ),
        "RunResponse": (
            ("status_code", 1, _INT32, False, ""),
            ("status", 2, _STRING, False, ""),
            ("message", 3, _STRING, False, ""),
            ("outputs", 4, _MESSAGE, True, "OutputItem"),
        ),
        "ShutdownRequest": (),
        "ShutdownResponse": (
            ("status_code", 1, _INT32, False, ""),
            ("status", 2, _STRING, False, ""),
            ("message", 3, _STRING, False, ""),
        ),
    }
)
# map<string, bytes> fields: protobuf writes each as a nested "<Field>Entry" message with
# key = 1 and value = 2 and the map_entry option, which is what their wire format is.
MAP_ENTRIES = MappingProxyType({"InputItem": "InputEntry", "OutputItem": "OutputEntry"})
METHODS = (
    ("Status", "StatusRequest", "StatusResponse"),
    ("Run", "RunRequest", "RunResponse"),
    ("Shutdown", "ShutdownRequest", "ShutdownResponse"),
)


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The contract's ``.proto`` as a descriptor: proto3, no package."""
    proto = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, syntax="proto3")
    for name, fields in MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name in fields:
            field = message.field.add(
                name=field_name,
                number=number,
                type=kind,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
                json_name=_json_name(field_name),
            )
            if type_name:
                field.type_name = f".{type_name}"
        if name in MAP_ENTRIES:
            entry = message.nested_type.add(name=MAP_ENTRIES[name])
            entry.options.map_entry = True
            for field_name, number, kind in (("key", 1, _STRING), ("value", 2, _BYTES)):
                entry.field.add(
                    name=field_name, number=number, type=kind, label=_F.LABEL_OPTIONAL, json_name=field_name
                )
    service = proto.service.add(name=SERVICE)
    for method, request, response in METHODS:
        service.method.add(name=method, input_type=f".{request}", output_type=f".{response}")
    return proto


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _classes() -> dict[str, type[Message]]:
    # A pool of our own: the default pool is shared with whatever else the process loads,
    # which may hold another file defining these unqualified names.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name)) for name in MESSAGES}


_CLASSES = MappingProxyType(_classes())  # built once, read-only
StatusRequest: Any = _CLASSES["StatusRequest"]
StatusResponse: Any = _CLASSES["StatusResponse"]
ModelInfo: Any = _CLASSES["ModelInfo"]
ModelDescription: Any = _CLASSES["ModelDescription"]
ModelInput: Any = _CLASSES["ModelInput"]
ModelOutput: Any = _CLASSES["ModelOutput"]
ModelResources: Any = _CLASSES["ModelResources"]
ModelTimeout: Any = _CLASSES["ModelTimeout"]
ModelFeatures: Any = _CLASSES["ModelFeatures"]
InputItem: Any = _CLASSES["InputItem"]
RunRequest: Any = _CLASSES["RunRequest"]
OutputItem: Any = _CLASSES["OutputItem"]
RunResponse: Any = _CLASSES["RunResponse"]
ShutdownRequest: Any = _CLASSES["ShutdownRequest"]
ShutdownResponse: Any = _CLASSES["ShutdownResponse"]

# path -> (request class, response class), for clients and servers alike.
ROUTES: Mapping[str, tuple[Any, Any]] = MappingProxyType(
    {
        STATUS_PATH: (StatusRequest, StatusResponse),
        RUN_PATH: (RunRequest, RunResponse),
        SHUTDOWN_PATH: (ShutdownRequest, ShutdownResponse),
    }
)


def run_request(items: list[dict[str, bytes]], *, detect_drift: bool = False, explain: bool = False) -> Any:
    """A ``RunRequest`` of ``items``, each a map of input file name to its bytes."""
    request = RunRequest(detect_drift=detect_drift, explain=explain)
    for item in items:
        request.inputs.add().input.update(item)
    return request


def output_item(outputs: dict[str, bytes] | None = None, *, error: str | None = None) -> Any:
    """An ``OutputItem``: the outputs of a success, or a failure with its ``error`` message."""
    if error is not None:
        return OutputItem(output={ERROR_KEY: error.encode()}, success=False)
    return OutputItem(output=outputs or {}, success=True)
