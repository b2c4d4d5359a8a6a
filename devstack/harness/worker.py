"""Azure's Python worker library, driven in-process the way the host's proxy worker drives it.

In Azure the .NET host talks gRPC to the proxy worker, which only unwraps each ``StreamingMessage`` and awaits
the worker library's handler for it (Azure/azure-functions-python-worker, ``workers/proxy_worker``). Here the
stand-in host does the same without the socket: every request is built as the host builds it, serialized to
protobuf bytes and parsed back before the library sees it, and every answer likewise, so the library gets
exactly what it would get off the wire, and the host only what a real answer can carry.

The library keeps its state in module globals (one app per process, as in Azure), so a process has one
Worker per function-app script; LocalHost instances in one process share it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import azure_functions_runtime as library

# The host version this stand-in speaks for (Functions 4.x), sent in WorkerInitRequest.
HOST_VERSION = "4.1044.0"
# What the .NET host announces (RpcWorkerConstants); the library answers with its own capabilities.
HOST_CAPABILITIES = {"FunctionDataCache": "false"}
PROTOS_ENV = "DEVSTACK_WORKER_PROTOS"
_PROTOS_PACKAGE = "devstack_function_rpc"


class WorkerError(RuntimeError):
    """The worker answered a request with a failure status: the message is the worker's own."""


class InvocationFailed(Exception):
    """The worker reported the invocation as failed; the message is its RpcException text."""


@dataclass(frozen=True)
class Outcome:
    """A successful invocation's output bindings by name (``$return`` included), as TypedData."""

    values: Mapping[str, Any]


def _protos_dir() -> Path:
    """Where `make install` put the generated FunctionRpc protos (azure-functions-runtime-v1's wheel)."""
    configured = os.environ.get(PROTOS_ENV)
    candidates = [Path(configured)] if configured else []
    candidates.append(Path(sys.prefix) / "worker-protos" / "tests" / "protos")
    for candidate in candidates:
        if (candidate / "FunctionRpc_pb2.py").is_file():
            return candidate
    raise FileNotFoundError(
        "the FunctionRpc protos are not installed: run `make install` (it puts azure-functions-runtime-v1's "
        f"generated protos under {candidates[-1]}), or point {PROTOS_ENV} at a folder holding FunctionRpc_pb2.py")


def load_protos() -> types.SimpleNamespace:
    """The generated FunctionRpc messages, as the proxy worker's ``protos`` module exposes them (no gRPC stubs)."""
    if _PROTOS_PACKAGE not in sys.modules:
        # The wheel ships them as a top-level `tests.protos` package, which would clash with this repository's
        # `tests`: load the folder under a name of our own, without its __init__ (that one imports grpc).
        package = types.ModuleType(_PROTOS_PACKAGE)
        package.__path__ = [str(_protos_dir())]
        sys.modules[_PROTOS_PACKAGE] = package
    rpc = importlib.import_module(f"{_PROTOS_PACKAGE}.FunctionRpc_pb2")
    nullable = importlib.import_module(f"{_PROTOS_PACKAGE}.shared.NullableTypes_pb2")
    names = {k: getattr(nullable, k) for k in dir(nullable) if not k.startswith("_")}
    names.update({k: getattr(rpc, k) for k in dir(rpc) if not k.startswith("_")})
    return types.SimpleNamespace(**names)


@dataclass(frozen=True)
class WorkerRequest:
    """The proxy worker's request wrapper: a name, the StreamingMessage, and (for init) its properties."""

    name: str
    request: Any
    properties: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class FunctionMetadata:
    """One function as the worker described it to the host: its id and raw bindings (function.json form)."""

    name: str
    function_id: str
    directory: str
    script_file: str
    bindings: tuple[dict[str, Any], ...]

    @property
    def trigger(self) -> dict[str, Any]:
        """The one binding whose type ends in ``Trigger``."""
        return next(b for b in self.bindings if str(b.get("type", "")).endswith("Trigger"))

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """Output bindings, ``$return`` included, in declaration order."""
        return [b for b in self.bindings if str(b.get("direction", "")).lower() == "out"]

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """Input bindings other than the trigger."""
        trigger = self.trigger
        return [b for b in self.bindings if str(b.get("direction", "")).lower() == "in" and b is not trigger]


def script_of(app: Any) -> Path:
    """The script that defines a function app, given its path, its module, or the FunctionApp object."""
    if isinstance(app, (str, Path)):
        return Path(app).resolve()
    if isinstance(app, types.ModuleType) and app.__file__:
        return Path(app.__file__).resolve()
    for module in list(sys.modules.values()):
        if any(value is app for value in vars(module).values()) and getattr(module, "__file__", None):
            return Path(str(module.__file__)).resolve()
    raise ValueError(f"no imported module defines {app!r}: pass the function app's script path instead")


class Worker:
    """The worker library for one function app: initialized once, then asked for metadata and invocations."""

    _instances: ClassVar[dict[Path, Worker]] = {}
    _threadpool_started: ClassVar[bool] = False

    def __init__(self, script: Path) -> None:
        self.script = script
        self.directory = script.parent
        self.protos = load_protos()
        self.functions: dict[str, FunctionMetadata] = {}
        self.capabilities: dict[str, str] = {}
        self._request_id = str(uuid.uuid4())
        self._started = False

    @classmethod
    async def for_script(cls, script: Path | str) -> Worker:
        """The started worker for a function-app script (``function_app.py`` or another name), one per process."""
        path = Path(script).resolve()
        worker = cls._instances.get(path)
        if worker is None:
            worker = cls._instances[path] = cls(path)
        await worker.start()
        return worker

    async def start(self) -> None:
        """WorkerInitRequest (the library indexes the app), FunctionsMetadataRequest, one FunctionLoadRequest each."""
        # No lock: the library's handlers never suspend, so two starts cannot interleave.
        if self._started:
            return
        self._prepare_import()
        # Which script the library indexes is an app setting it reads at init (default function_app.py).
        os.environ["PYTHON_SCRIPT_FILE_NAME"] = self.script.name
        if not Worker._threadpool_started:
            library.start_threadpool_executor()  # the proxy worker starts it before init
            Worker._threadpool_started = True
        init = self._roundtrip(self.protos.StreamingMessage(
            request_id=self._request_id,
            worker_init_request=self.protos.WorkerInitRequest(
                host_version=HOST_VERSION, capabilities=HOST_CAPABILITIES,
                function_app_directory=str(self.directory))))
        answer = self._answer(await library.worker_init_request(WorkerRequest(
            "WorkerInitRequest", init, {"protos": self.protos, "host": "127.0.0.1"})), "worker_init_response")
        self._check(answer.worker_init_response.result, "worker init")
        self.capabilities = dict(answer.worker_init_response.capabilities)
        metadata = self._answer(await library.functions_metadata_request(WorkerRequest(
            "WorkerMetadataRequest", self._roundtrip(self.protos.StreamingMessage(
                request_id=self._request_id,
                functions_metadata_request=self.protos.FunctionsMetadataRequest(
                    function_app_directory=str(self.directory)))))), "function_metadata_response")
        self._check(metadata.function_metadata_response.result, "function metadata")
        for meta in metadata.function_metadata_response.function_metadata_results:
            await self._load(meta)
        self._started = True

    def _prepare_import(self) -> None:
        # The library imports the script by its stem. A module already imported under a package name (a test's
        # own app) is that same module, not a second copy with its own state; otherwise, as the proxy worker
        # does, the app's folder goes first on sys.path.
        stem = self.script.stem
        if stem not in sys.modules:
            for module in list(sys.modules.values()):
                if getattr(module, "__file__", None) and Path(str(module.__file__)).resolve() == self.script:
                    sys.modules[stem] = module
                    break
        if stem not in sys.modules and str(self.directory) not in sys.path:
            sys.path.insert(0, str(self.directory))

    async def _load(self, meta: Any) -> None:
        bindings = tuple(json.loads(raw) for raw in meta.raw_bindings)
        request = self._roundtrip(self.protos.StreamingMessage(
            request_id=self._request_id,
            function_load_request=self.protos.FunctionLoadRequest(function_id=meta.function_id, metadata=meta)))
        answer = self._answer(await library.function_load_request(
            WorkerRequest("FunctionLoadRequest", request)), "function_load_response")
        self._check(answer.function_load_response.result, f"loading {meta.name}")
        self.functions[meta.name] = FunctionMetadata(
            name=meta.name, function_id=meta.function_id, directory=meta.directory, script_file=meta.script_file,
            bindings=bindings)

    async def invoke(self, function: FunctionMetadata | str, inputs: tuple[list[Any], Mapping[str, Any]],
                     invocation_id: str | None = None) -> Outcome:
        """One InvocationRequest; its outputs, or InvocationFailed with the worker's message."""
        meta = self.functions[function] if isinstance(function, str) else function
        input_data, trigger_metadata = inputs
        request = self._roundtrip(self.protos.StreamingMessage(
            request_id=self._request_id,
            invocation_request=self.protos.InvocationRequest(
                invocation_id=invocation_id or str(uuid.uuid4()), function_id=meta.function_id,
                input_data=input_data, trigger_metadata=dict(trigger_metadata))))
        answer = await library.invocation_request(WorkerRequest("FunctionInvocationRequest", request))
        response = self._answer(answer, "invocation_response").invocation_response
        if response.result.status != self.protos.StatusResult.Success:
            raise InvocationFailed(response.result.exception.message)
        values = {binding.name: binding.data for binding in response.output_data}
        if response.HasField("return_value"):
            values["$return"] = response.return_value
        return Outcome(values)

    def _roundtrip(self, message: Any) -> Any:
        return self.protos.StreamingMessage.FromString(message.SerializeToString())

    def _answer(self, response: Any, field: str) -> Any:
        return self._roundtrip(self.protos.StreamingMessage(request_id=self._request_id, **{field: response}))

    def _check(self, result: Any, what: str) -> None:
        if result.status != self.protos.StatusResult.Success:
            raise WorkerError(f"{what} failed in the worker: {result.exception.message}")
