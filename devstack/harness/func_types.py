"""Concrete azure.functions types the worker would supply: an output binding's Out, and the Context."""

from __future__ import annotations

import secrets
import threading
from typing import Any

import azure.functions as func
from azure.functions import _abc as func_abc


class LocalOut(func.Out[Any]):
    """Concrete ``func.Out``: holds whatever the function sets."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        """Set the output value."""
        self._value = val

    def get(self) -> Any:
        """Return the output value."""
        return self._value


class _TraceContext(func_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(func_abc.RetryContext):
    # Queue triggers do not use host retry policies, so the worker always sees a zero retry count.
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class LocalContext(func.Context):
    """Concrete ``func.Context`` for one invocation."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace = _TraceContext()
        self._retry = _RetryContext()
        self._tls = threading.local()
        self._tls.invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> func_abc.TraceContext:
        return self._trace

    @property
    def retry_context(self) -> func_abc.RetryContext:
        return self._retry
