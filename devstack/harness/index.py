"""The app's functions as the host indexes them, and app-setting references in their bindings."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

_SETTING_REF = re.compile(r"%([^%]+)%")


def resolve_settings(value: str) -> str:
    """Replace ``%NAME%`` app-setting references the way the host does for binding expressions."""

    def lookup(m: re.Match[str]) -> str:
        if m.group(1) not in os.environ:
            raise KeyError(f"binding refers to app setting {m.group(1)!r}, which is not set")
        return os.environ[m.group(1)]

    return _SETTING_REF.sub(lookup, value)


def enum_value(value: Any) -> Any:
    """The value of an azure.functions enum member, or the value itself."""
    return getattr(value, "value", value)


@dataclass
class HostFunction:
    """One indexed function as the host runs it: its bindings, and its in-flight queue work."""

    name: str
    user_function: Callable[..., Any]
    trigger_type: str
    trigger: Any
    outputs: list[Any]
    unsupported_inputs: list[str]
    context_param: str | None
    trigger_annotation: Any
    directory: str
    in_flight: int = 0
    receiving: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


def index_functions(app: func.FunctionApp) -> list[Any]:
    """The app's indexed functions, computed once per app and shared by every caller."""
    # get_functions() re-validates and fails on a second call, so cache the result on the app.
    cached = getattr(app, "_devstack_indexed_functions", None)
    if cached is None:
        cached = list(app.get_functions())
        app._devstack_indexed_functions = cached  # type: ignore[attr-defined]
    return cached


def build_function(fn: Any) -> HostFunction:
    """The HostFunction for one of the app's indexed functions."""
    user_function = fn.get_user_function()
    trigger = fn.get_trigger()
    try:
        hints = typing.get_type_hints(user_function)
    except Exception:  # string annotations that do not resolve; fall back to raw ones
        hints = dict(getattr(user_function, "__annotations__", {}))
    params = inspect.signature(user_function).parameters
    binding_names = {b.name for b in fn.get_bindings()}
    context_param = None
    for name in params:
        hint = hints.get(name)
        if name not in binding_names and (
            name == "context" or (isinstance(hint, type) and issubclass(hint, func.Context))
        ):
            context_param = name
    outputs = [b for b in fn.get_bindings() if enum_value(b.direction) == 1]
    inputs = [b.name for b in fn.get_bindings() if enum_value(b.direction) != 1 and b is not trigger]
    try:
        directory = os.path.dirname(inspect.getfile(user_function))
    except TypeError:
        directory = os.getcwd()
    return HostFunction(
        name=fn.get_function_name(),
        user_function=user_function,
        trigger_type=trigger.type,
        trigger=trigger,
        outputs=outputs,
        unsupported_inputs=inputs,
        context_param=context_param,
        trigger_annotation=hints.get(trigger.name),
        directory=directory,
    )
