"""HTTP triggers: route templates, function-key auth, and the aiohttp server in front of them."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from devstack.harness.index import HostFunction, resolve_settings
from devstack.harness.invocation import Invocations
from devstack.harness.rpc import HttpCall, http_answer, http_invocation

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")


@dataclass
class HttpRoute:
    """An HTTP trigger's route: its template compiled, its methods and its auth level."""

    function: HostFunction
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None
    auth_level: str


def _compile_route(template: str) -> re.Pattern[str]:
    """Compile an ASP.NET-style route template (``items/{id}``, ``{id:int}``, ``{id?}``, ``{*rest}``)."""
    out = []
    pos = 0
    for m in re.finditer(r"\{([^}]+)\}", template):
        out.append(re.escape(template[pos:m.start()]))
        spec = m.group(1)
        catch_all = spec.startswith("*")
        name = spec.lstrip("*").split(":", 1)[0].split("=", 1)[0]
        optional = name.endswith("?") or "=" in spec
        name = name.rstrip("?")
        body = f"(?P<{name}>.*)" if catch_all else f"(?P<{name}>[^/]+)"
        if optional or catch_all:
            # Let the preceding slash go with an omitted optional segment.
            if out and out[-1].endswith("/"):
                out[-1] = out[-1][:-1]
                body = f"(?:/{body})?"
            else:
                body = f"(?:{body})?"
        out.append(body)
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out), re.IGNORECASE)


class HttpTriggers(Invocations):
    """Serve HTTP-triggered functions under the route prefix.

    Part of LocalHost, whose __init__ sets the attributes declared here.
    """

    function_key: str
    http_host: str
    http_port: int | None
    http_base_url: str | None
    route_prefix: str
    stats: dict[str, dict[str, int]]
    _runner: web.AppRunner | None
    _routes: list[HttpRoute]

    def _route_for(self, fn: HostFunction) -> HttpRoute | None:
        trigger = fn.trigger
        template = resolve_settings(str(trigger.get("route") or fn.name)).strip("/")
        if template.lower().startswith("admin"):
            # As the host: `admin` routes are its own API, whatever the route prefix; the function is in error.
            log.error("%s: The specified route conflicts with one or more built in routes.", fn.name)
            return None
        methods = frozenset(str(m).upper() for m in trigger["methods"]) if trigger.get("methods") else None
        auth_level = str(trigger.get("authLevel") or "function").lower()
        return HttpRoute(fn, template, _compile_route(template), methods, auth_level)

    async def _start_http(self) -> None:
        server = web.Application(client_max_size=100 * 1024 * 1024)
        server.router.add_route("*", "/{tail:.*}", self._handle_http)
        self._runner = web.AppRunner(server, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.http_host, self.http_port or 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.http_base_url = f"http://{host}:{port}"

    def _match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        prefix = f"/{self.route_prefix}/" if self.route_prefix else "/"
        if not (path + "/").lower().startswith(prefix.lower()):
            return None
        sub = path[len(prefix):].strip("/")
        for route in self._routes:
            m = route.pattern.fullmatch(sub)
            if m and (route.methods is None or method.upper() in route.methods):
                return route, {k: v for k, v in m.groupdict().items() if v is not None}
        return None

    def _authorized(self, route: HttpRoute, request: web.Request) -> bool:
        if route.auth_level == "anonymous":
            return True
        given = request.headers.get("x-functions-key") or request.query.get("code") or ""
        return hmac.compare_digest(given.encode(), self.function_key.encode())

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        matched = self._match(request.method, request.path)
        if matched is None:
            return web.Response(status=404)
        route, route_params = matched
        if not self._authorized(route, request):
            return web.Response(status=401)
        fn = route.function
        call = HttpCall(method=request.method, url=str(request.url), headers=request.headers.items(),
                        query=request.query.items(), route_params=route_params, body=await request.read())
        inputs = http_invocation(self.worker.protos, fn.name, fn.trigger, call)
        stats = self.stats[fn.name]
        stats["invoked"] += 1
        started = time.perf_counter()
        invocation_id = str(uuid.uuid4())
        task = asyncio.create_task(self._invoke(fn, inputs, invocation_id))
        self._track(task)
        try:
            result = await asyncio.shield(task)
            response = self._to_web_response(fn, result)
        except Exception:
            stats["failed"] += 1
            log.exception("%s: HTTP invocation failed", fn.name)
            response = web.Response(status=500)
        else:
            stats["succeeded"] += 1
        log.info(
            "%s id=%s dequeue=- outcome=%d %.0fms",
            fn.name, invocation_id, response.status, (time.perf_counter() - started) * 1000,
        )
        return response

    @staticmethod
    def _to_web_response(fn: HostFunction, result: Any) -> web.Response:
        answer = http_answer(result)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
