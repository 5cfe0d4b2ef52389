"""A small asyncio client of the real API server for the harness's kubelet and proxy.

Why not the `kubernetes` package: the harness runs many watches and status writes on one
event loop; `kubernetes` is synchronous. This speaks the API's JSON over aiohttp with the
admin kubeconfig's TLS client certificate, which is all a kubelet needs.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str):
        shown = body if len(body) < 900 else body[:300] + " ... " + body[-500:]  # the cause is at the end
        super().__init__(f"{method} {path}: HTTP {status}: {shown}")
        self.status = status


class KubeApi:
    """JSON over HTTPS to one API server, authenticated by a client certificate."""

    def __init__(self, server: str, ca_file: str, cert_file: str, key_file: str):
        self.server = server.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=ca_file)
        self._ssl.load_cert_chain(cert_file, key_file)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                      content_type: str = "application/json", ok: tuple[int, ...] = ()) -> dict[str, Any] | None:
        """The response's JSON; a status in `ok` (e.g. 404, 409) returns None instead of raising."""
        assert self._session is not None, "KubeApi.open() first"
        data = None if body is None else json.dumps(body)
        async with self._session.request(method, self.server + path, data=data, params=params,
                                         headers={"Content-Type": content_type}) as r:
            text = await r.text()
            if r.status in ok:
                return None
            if r.status >= 300:
                raise ApiError(method, path, r.status, text)
            return json.loads(text) if text else {}

    async def get(self, path: str, **params: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        return await self.request("GET", path, params=params or None, ok=(404,))

    async def merge_patch(self, path: str, body: dict[str, Any], ok: tuple[int, ...] = (404,)) -> dict[str, Any] | None:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json", ok=ok)

    async def watch(self, path: str, on_problem: Callable[[str], None] | None = None,
                    **params: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) of each event of a list-then-watch of `path`, forever: a list first
        (each item as ADDED, then a SYNCED marker with an empty object), and on 410 Gone (the
        watch history was compacted) a fresh list.

        As client-go's reflector does, a failure the API server may recover from (a broken
        connection, 429 Too Many Requests, a 5xx of a loaded server) is retried with backoff,
        never ending the watch: a kubelet whose pod watch ended would leave every pod of its node
        as it was (Terminating for ever) while its heartbeats keep the node Ready. Each retried
        failure goes to `on_problem`. Other errors (403, 404: a wrong request) raise."""
        assert self._session is not None
        failures = 0
        while True:
            try:
                listing = await self.request("GET", path, params=params or None)
            except Exception as e:
                if not _transient(e):
                    raise
                failures += 1
                if on_problem is not None:
                    on_problem(f"list {path} failed ({failures} in a row), retrying: {e!r}")
                await asyncio.sleep(min(5.0, 0.2 * 2 ** min(failures, 5)))
                continue
            failures = 0
            assert listing is not None
            for item in listing.get("items", []):
                yield "ADDED", item
            yield "SYNCED", {}
            rv = listing["metadata"]["resourceVersion"]
            gone = False
            while not gone:
                try:
                    async with self._session.get(
                        self.server + path,
                        params={**params, "watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true",
                                "timeoutSeconds": "120"},
                        timeout=aiohttp.ClientTimeout(total=None, sock_read=180),
                    ) as r:
                        if r.status == 410:
                            gone = True
                            continue
                        if r.status >= 300:
                            raise ApiError("WATCH", path, r.status, await r.text())
                        failures = 0
                        async for line in r.content:
                            if not line.strip():
                                continue
                            event = json.loads(line)
                            obj = event["object"]
                            if event["type"] == "ERROR":
                                gone = obj.get("code") == 410
                                break
                            rv = obj["metadata"]["resourceVersion"]
                            if event["type"] != "BOOKMARK":
                                yield event["type"], obj
                except Exception as e:
                    if not _transient(e):
                        raise
                    failures += 1
                    if failures > 1 and on_problem is not None:  # one broken connection is routine
                        on_problem(f"watch {path} failed ({failures} in a row), retrying: {e!r}")
                    await asyncio.sleep(min(5.0, 0.2 * 2 ** min(failures - 1, 5)))  # watch again from rv


def _transient(error: BaseException) -> bool:
    """Whether a loaded or restarting API server may answer the same request later."""
    if isinstance(error, ApiError):
        return error.status == 429 or error.status >= 500
    return isinstance(error, (TimeoutError, aiohttp.ClientError, ConnectionError))
