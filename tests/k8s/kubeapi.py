"""A small asyncio client of the real API server for the harness's kubelet and proxy.

Why not the `kubernetes` package: the harness runs many watches and status writes on one
event loop; `kubernetes` is synchronous. This speaks the API's JSON over aiohttp with the
admin kubeconfig's TLS client certificate, which is all a kubelet needs.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
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

    async def watch(self, path: str, **params: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) of each event of a list-then-watch of `path`, forever: a list first
        (each item as ADDED, then a SYNCED marker with an empty object), and on 410 Gone (the
        watch history was compacted) a fresh list."""
        assert self._session is not None
        while True:
            listing = await self.request("GET", path, params=params or None)
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
                except (TimeoutError, aiohttp.ClientError):
                    await asyncio.sleep(0.2)  # the connection broke: watch again from rv
