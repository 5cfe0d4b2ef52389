"""The head's HTTP port (8265 in a pod, as Ray's dashboard): Prometheus metrics and the live tables.

- `GET /metrics`: Prometheus text. Nodes, actors by state, restarts and jobs, read from the
  head's tables when scraped (nothing is counted on the hot path), and the calls of the RPCs
  an operator makes (`kastor_head_operator_requests_total`, by method).
- `GET /api/actors`, `GET /api/nodes`, `GET /api/placement_groups`: the same rows as `kastor list ... --json`.
- `GET /-/healthy`: 200 while the head's loop answers.

Like every Kastor port it wants the cluster token, here as `Authorization: Bearer <token>`,
and it is checked before anything else is read. It speaks HTTPS when the head has a TLS
certificate (KASTOR_TLS_CERT / KASTOR_TLS_KEY).
"""

from __future__ import annotations

import hmac
import ssl
from collections import Counter
from typing import TYPE_CHECKING

from aiohttp import web
from kastor.runtime import settings, tls
from kastor.runtime.cluster_watch import OPERATOR_METHODS
from kastor.runtime.protocol import kastor_pb2 as pb
from kastor.runtime.state_rows import actor_row, group_row, node_row
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from kastor.runtime.head import Head

class _HeadCollector:
    """Turns the head's tables into metrics at scrape time."""

    def __init__(self, head: Head):
        self._head = head

    def collect(self):
        head = self._head
        nodes = GaugeMetricFamily("kastor_nodes", "Nodes the head knows, by liveness", labels=["state"])
        alive = sum(1 for n in head.nodes.values() if n.alive)
        nodes.add_metric(["alive"], alive)
        nodes.add_metric(["dead"], len(head.nodes) - alive)
        yield nodes

        by_state = Counter(pb.ActorState.Name(a.state) for a in head.actors.values())
        actors = GaugeMetricFamily("kastor_actors", "Actors in the head's table, by state", labels=["state"])
        for state in pb.ActorState.keys():
            actors.add_metric([state], by_state.get(state, 0))
        yield actors

        yield GaugeMetricFamily("kastor_actor_restarts", "Restarts summed over all actors",
                                value=sum(a.num_restarts for a in head.actors.values()))
        yield GaugeMetricFamily("kastor_jobs", "Jobs whose driver is connected or may reconnect",
                                value=len(head.jobs))
        yield GaugeMetricFamily("kastor_named_actors", "Names registered, over all namespaces",
                                value=len(head.names))
        yield GaugeMetricFamily("kastor_head_actor_long_polls",
                                "GetActor long polls waiting for an actor's next change (a caller of an actor "
                                "keeps one open)", value=sum(len(w) for w in head.waiters.values()))
        yield CounterMetricFamily("kastor_head_code_fetches",
                                  "GetFunction calls served: workers fetching a function's code (an actor's class "
                                  "comes with its StartActor, so creating actors adds none)",
                                  value=head.code_fetches)
        served = CounterMetricFamily("kastor_head_operator_requests",
                                     "Calls of the RPCs an operator makes (runtime/cluster_watch.py), by method",
                                     labels=["method"])
        for method in OPERATOR_METHODS:
            served.add_metric([method], head.requests.get(method, 0))
        yield served


def build_app(head: Head, token: str) -> web.Application:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_HeadCollector(head))
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def require_token(request: web.Request, handler):
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise web.HTTPUnauthorized(text="this Kastor port needs the cluster token: "
                                            "send 'Authorization: Bearer <token>'\n",
                                       headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def actors(request: web.Request) -> web.Response:
        return web.json_response([actor_row(a) for a in head.actors.values()])

    async def nodes(request: web.Request) -> web.Response:
        return web.json_response([node_row(n) for n in head.nodes.values()])

    async def placement_groups(request: web.Request) -> web.Response:
        return web.json_response([group_row(g) for g in head.groups.values()])

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(middlewares=[require_token], client_max_size=4096)
    app.add_routes([web.get("/metrics", metrics), web.get("/api/actors", actors), web.get("/api/nodes", nodes),
                    web.get("/api/placement_groups", placement_groups), web.get("/-/healthy", healthy)])
    return app


def _ssl_context() -> ssl.SSLContext | None:
    if not tls.serving():
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.TLS_CERT.require(), settings.TLS_KEY.require())
    return context


async def start(head: Head, token: str, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serves the app; returns its runner (to clean up) and the bound port (`port` 0: any free one)."""
    runner = web.AppRunner(build_app(head, token), access_log=None)
    await runner.setup()
    try:
        # reuse_port=False: a second head on a busy port must fail here, not share it.
        await web.TCPSite(runner, host, port, ssl_context=_ssl_context(), reuse_port=False).start()
    except OSError as e:
        await runner.cleanup()
        raise tls.PortInUseError(tls.port_in_use_message(
            f"{host}:{port}", "dashboard (HTTP metrics)", "Choose another with --dashboard-port / "
            "KASTOR_DASHBOARD_PORT (0: any free port, -1: none).", e.strerror or str(e))) from None
    return runner, runner.addresses[0][1]
