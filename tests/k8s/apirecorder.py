"""A recording proxy in front of the real API server: what the operator under test asks of it.

The operator gets a kubeconfig whose server is this proxy (plain HTTP on 127.0.0.1); the
proxy forwards every request, streamed both ways (watches included), to the real
kube-apiserver with the admin's client certificate, and records its verb (as the API
server's metrics and audit log name them: LIST, WATCH, GET, CREATE, PATCH, ...), path and
query. Unlike the API server's own metrics, it sees only the operator's requests, with
their label selectors.

`hold(predicate)` keeps matching requests waiting (until `release()`, at most HOLD_MAX_S):
a slow API server, for real, as seen by the operator's blocking client.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from .loop_thread import LoopThread

HOLD_MAX_S = 25.0  # under the operator's read timeout (kube.REQUEST_TIMEOUT), so a held call is slow, not failed
# As the client sent them, and no others: the kubernetes client sends a JSON body without a
# Content-Type, which the API server accepts, and aiohttp must not add one of its own.
_FORWARDED = ("Content-Type", "Accept", "User-Agent")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        """The resource (plural) the path names, with its subresource: pods, actorclusters/status, ..."""
        parts = [p for p in self.path.split("/") if p]
        parts = parts[2:] if parts[:1] == ["api"] else parts[3:]  # /api/v1/... or /apis/<group>/<version>/...
        if parts[:1] == ["namespaces"] and len(parts) >= 3:
            parts = parts[2:]
        return "/".join([parts[0], *parts[2:3]]) if parts else ""

    @property
    def named(self) -> bool:
        parts = [p for p in self.path.split("/") if p]
        parts = parts[2:] if parts[:1] == ["api"] else parts[3:]
        if parts[:1] == ["namespaces"] and len(parts) >= 3:
            parts = parts[2:]
        return len(parts) >= 2

    @property
    def verb(self) -> str:
        if self.method == "GET":
            if self.query.get("watch") in ("true", "1"):
                return "WATCH"
            return "GET" if self.named else "LIST"
        return {"POST": "CREATE", "PUT": "UPDATE"}.get(self.method, self.method)


class ApiRecorder:
    def __init__(self, api_client, workdir: Path):
        config = api_client.configuration
        self.upstream = config.host.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=config.ssl_ca_cert)
        self._ssl.load_cert_chain(config.cert_file, config.key_file)
        self.workdir = workdir
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._hold: Callable[[Request], bool] | None = None
        self._held = 0
        self._loop = LoopThread("api-recorder")
        self._released: asyncio.Event | None = None

    # ---- lifecycle ----

    def start(self) -> ApiRecorder:
        self._loop.start()
        self.url = self._loop.run(self._start(), 30)
        self.kubeconfig = self.workdir / "recorded.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "recorded",
            "clusters": [{"name": "recorded", "cluster": {"server": self.url}}],
            "users": [{"name": "operator", "user": {}}],
            "contexts": [{"name": "recorded", "context": {"cluster": "recorded", "user": "operator"}}]}))
        return self

    async def _start(self) -> str:
        self._released = asyncio.Event()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._loop.alive():
            self.release()
            self._loop.run(self._stop(), 30)
            self._loop.stop()

    async def _stop(self) -> None:
        await self._session.close()  # ends the watches still streaming, so their handlers return
        await self._runner.cleanup()

    # ---- what the test reads and controls ----

    def seen(self, predicate: Callable[[Request], bool] = lambda r: True) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if predicate(r)]

    def held(self) -> int:
        """How many requests are being held right now."""
        with self._lock:
            return self._held

    def hold(self, predicate: Callable[[Request], bool]) -> None:
        with self._lock:
            self._hold = predicate

    def release(self) -> None:
        with self._lock:
            self._hold = None
        if self._released is not None:
            self._loop.loop.call_soon_threadsafe(self._released.set)

    # ---- the proxy ----

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        record = Request(request.method, request.path, dict(request.query))
        with self._lock:
            self.requests.append(record)
            hold = self._hold is not None and self._hold(record)
            if hold:
                self._held += 1
        if hold:
            try:
                await asyncio.wait_for(self._released.wait(), HOLD_MAX_S)
            except TimeoutError:
                pass
            finally:
                with self._lock:
                    self._held -= 1
        headers = {k: request.headers[k] for k in _FORWARDED if k in request.headers}
        body = await request.read()
        response = web.StreamResponse(status=502)
        try:
            async with self._session.request(request.method, self.upstream + str(request.rel_url),
                                             headers=headers, data=body or None, ssl=self._ssl,
                                             skip_auto_headers=("Content-Type",)) as upstream:
                response.set_status(upstream.status)
                if "Content-Type" in upstream.headers:
                    response.headers["Content-Type"] = upstream.headers["Content-Type"]
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientError, RuntimeError):
            pass  # the operator went away mid-watch, or the recorder is stopping
        return response
