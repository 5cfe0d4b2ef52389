"""kmock's KubernetesEmulator, extended to keep an API server's promises that kopf, kubectl
and the operator rely on.

kmock 0.8 serves discovery and errors, but its store merges dicts and nothing more. Here
requests for resources go through an apiserver-like store instead: server-side metadata
(uid, creationTimestamp, a resourceVersion bumped on every real write, generation bumped
on spec changes, generateName), 201/409/404/422 as a real server answers, merge/JSON/
strategic patches (a failed JSON-patch `test` is a 422) and PUT with optimistic
concurrency, the status subresource (main-resource writes keep status, /status writes
change only status), label and field selectors, list resourceVersions and watches that
resume from `?resourceVersion` and end at `timeoutSeconds`, finalizers and deletion
timestamps, ownerReference garbage collection, CRD schema validation and defaulting, and
CRDs that become served resources as soon as they are created. Namespaces are served at
/api/v1/namespaces[/NAME], and /api/v1 reports groupVersion "v1".

Running pods are deleted gracefully, as for real: the DELETE marks them (deletionTimestamp),
the kubelet harness kills the processes and then removes the pod with gracePeriodSeconds=0.
Deliberate simplifications: CEL rules
(x-kubernetes-validations) are not evaluated; strategic merge patches merge like JSON
merge patches.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import copy
import datetime
import json
import random
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
import jsonschema
import kmock


@dataclass
class ResourceDef:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = True
    schema: dict[str, Any] | None = None
    short_names: list[str] = field(default_factory=list)
    singular: str = ""
    printer_columns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return self.group, self.plural


BUILTINS = [
    ResourceDef("", "v1", "namespaces", "Namespace", False),
    ResourceDef("", "v1", "pods", "Pod", True),
    ResourceDef("", "v1", "services", "Service", True),
    ResourceDef("", "v1", "secrets", "Secret", True, status_subresource=False),
    ResourceDef("", "v1", "configmaps", "ConfigMap", True, status_subresource=False),
    ResourceDef("", "v1", "serviceaccounts", "ServiceAccount", True, status_subresource=False),
    ResourceDef("", "v1", "events", "Event", True, status_subresource=False),
    ResourceDef("events.k8s.io", "v1", "events", "Event", True, status_subresource=False),
    ResourceDef("coordination.k8s.io", "v1", "leases", "Lease", True, status_subresource=False),
    ResourceDef("apps", "v1", "statefulsets", "StatefulSet", True),
    ResourceDef("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    ResourceDef("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False),
]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(timestamp: str) -> str:
    since = datetime.datetime.now(datetime.UTC) - datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC)
    seconds = max(0, int(since.total_seconds()))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902; a failed `test` raises 422 like the API server."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(op["path"])
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1] if parts else None
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ApiError(422, "Invalid", f"the JSON patch test at {op['path']} failed")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                if kind == "replace" and last not in parent:
                    raise ApiError(422, "Invalid", f"the JSON patch path {op['path']} does not exist")
                parent[last] = op["value"]
        elif kind == "remove":
            try:
                if isinstance(parent, list):
                    parent.pop(int(last))
                else:
                    del parent[last]
            except (KeyError, IndexError):
                raise ApiError(422, "Invalid", f"the JSON patch path {op['path']} does not exist") from None
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch op {kind!r}")
    return doc


def _match_labels(labels: dict[str, str], selector: str | None) -> bool:
    """Equality, set-based (in, notin) and existence requirements, as in `kubectl -l`."""
    if not selector:
        return True
    requirements, depth, current = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            requirements.append(current.strip())
            current = ""
        else:
            current += ch
    requirements.append(current.strip())
    for req in filter(None, requirements):
        if " notin " in req:
            key, values = req.split(" notin ", 1)
            if labels.get(key.strip()) in {v.strip() for v in values.strip(" ()").split(",")}:
                return False
        elif " in " in req:
            key, values = req.split(" in ", 1)
            if labels.get(key.strip()) not in {v.strip() for v in values.strip(" ()").split(",")}:
                return False
        elif "!=" in req:
            key, value = req.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in req:
            key, value = req.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


def _match_fields(obj: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    for req in selector.split(","):
        negate = "!=" in req
        key, value = req.replace("!=", "=").replace("==", "=").split("=", 1)
        current: Any = obj
        for part in key.strip().split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if (str(current or "") == value.strip()) == negate:
            return False
    return True


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting, as the API server does for CRDs before storing."""
    if isinstance(value, dict) and schema.get("type") == "object":
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(sub, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in value]
    return value


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """Serves resources from an apiserver-like store; everything else (discovery) is kmock's."""

    defs: dict[tuple[str, str], ResourceDef] = attrs.field(factory=dict, init=False)
    store: dict[tuple[str, str], dict[tuple[str | None, str], dict[str, Any]]] = attrs.field(factory=dict, init=False)
    history: list[tuple[int, tuple[str, str], dict[str, Any]]] = attrs.field(factory=list, init=False)
    rv: int = attrs.field(default=1, init=False)
    changed: asyncio.Condition = attrs.field(factory=asyncio.Condition, init=False)
    created: list[dict[str, Any]] = attrs.field(factory=list, init=False)  # create bodies, as clients sent them
    # The service CIDR ("127.N" for 127.N.x.y): loopback, so the kubelet harness can serve each
    # ClusterIP as kube-proxy does; each run has its own (isolation.AddressBlock).
    service_ip_prefix: str = "127.129"
    # A re-created Service gets its old ClusterIP back, so its name never changes address
    # (the run's hosts file is append-only). Real clusters may do either.
    cluster_ips: dict[tuple[str, str], str] = attrs.field(factory=dict, init=False)
    closing: bool = attrs.field(default=False, init=False)  # ends open watches, as a stopping apiserver does

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for rdef in BUILTINS:
            self.register(rdef)
        for ns in ("default", "kube-system"):
            self._put(self.defs[("", "namespaces")], None, ns, {"apiVersion": "v1", "kind": "Namespace",
                                                                "metadata": {"name": ns, "uid": str(uuid.uuid4()),
                                                                             "creationTimestamp": _now()}})

    # ---- resource registry (discovery is served by kmock from self.resources) ----

    def register(self, rdef: ResourceDef) -> None:
        self.defs[rdef.key] = rdef
        self.store.setdefault(rdef.key, {})
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        self.resources[kmock.resource(rdef.group, rdef.version, rdef.plural)] = kmock.ResourceInfo(
            kind=rdef.kind, namespaced=rdef.namespaced, verbs=verbs, shortnames=rdef.short_names,
            singular=rdef.singular or rdef.kind.lower(), subresources=["status"] if rdef.status_subresource else [])

    def register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served", True):
                self.register(ResourceDef(
                    spec["group"], version["name"], spec["names"]["plural"], spec["names"]["kind"],
                    spec.get("scope", "Namespaced") == "Namespaced", "status" in (version.get("subresources") or {}),
                    (version.get("schema") or {}).get("openAPIV3Schema"), spec["names"].get("shortNames", []),
                    spec["names"].get("singular", ""), version.get("additionalPrinterColumns") or []))

    async def _serve_version(self, request: kmock.Request) -> Any:
        """kmock's resource list, with the core group's groupVersion spelled "v1" (not "/v1")."""
        payload = await super()._serve_version(request)
        if request.resource is not None and request.resource.group == "":
            payload["groupVersion"] = request.resource.version
        return payload

    # ---- routing ----

    def _route(self, path: str) -> tuple[ResourceDef, str | None, str | None, str | None] | None:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 3 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (group, rest[2]) in self.defs:
            ns, rest = rest[1], rest[2:]
        rdef = self.defs.get((group, rest[0]))
        if rdef is None or rdef.version != version and rdef.group:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return rdef, ns, name, sub

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        if raw.path != "/" and raw.path.endswith("/"):  # /api/v1/ is /api/v1
            raw = raw.clone(rel_url=raw.rel_url.with_path(raw.path.rstrip("/")))
        try:
            route = self._route(raw.path)
            if route is None:
                return await super().__call__(raw)
            rdef, ns, name, sub = route
            data = json.loads(body) if body else None
            q = raw.query
            as_table = "as=Table" in raw.headers.get("Accept", "")
            if raw.method == "GET" and name is None:
                if q.get("watch") in ("true", "1"):
                    return await self._watch(raw, rdef, ns)
                listing = self._list(rdef, ns, q.get("labelSelector"), q.get("fieldSelector"))
                return self._json(self._table(rdef, listing["items"]) if as_table else listing)
            if raw.method == "GET":
                obj = self._get(rdef, ns, name)
                return self._json(self._table(rdef, [obj]) if as_table else obj)
            if raw.method == "POST" and name is None:
                return self._json(await self._create(rdef, ns, data), 201)
            if raw.method == "PUT" and name:
                return self._json(await self._replace(rdef, ns, name, sub, data))
            if raw.method == "PATCH" and name:
                ctype = raw.headers.get("Content-Type", "")
                return self._json(await self._patch(rdef, ns, name, sub, data, ctype))
            if raw.method == "DELETE" and name:
                grace = q.get("gracePeriodSeconds") or (data or {}).get("gracePeriodSeconds")
                return self._json(await self._delete(rdef, ns, name, None if grace is None else int(grace)))
            if raw.method == "DELETE":
                items = self._list(rdef, ns, q.get("labelSelector"), q.get("fieldSelector"))["items"]
                for item in items:
                    await self._delete(rdef, item["metadata"].get("namespace"), item["metadata"]["name"])
                return self._json({"kind": f"{rdef.kind}List", "apiVersion": rdef.api_version, "items": items})
            raise ApiError(405, "MethodNotAllowed", f"{raw.method} is not allowed on {raw.path}")
        except ApiError as e:
            return self._json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": e.message, "reason": e.reason, "code": e.code}, e.code)

    def _table(self, rdef: ResourceDef, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Server-side printing for kubectl: a CRD's additionalPrinterColumns, else Name and Age."""
        columns = rdef.printer_columns or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        definitions = [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}] + \
            [{"name": c["name"], "type": c["type"], "format": "", "description": c.get("description", ""),
              "priority": c.get("priority", 0)} for c in columns]
        rows = []
        for obj in items:
            cells: list[Any] = [obj["metadata"]["name"]]
            for c in columns:
                value: Any = obj
                for part in c["jsonPath"].strip(".").split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                cells.append(_age(value) if c["type"] == "date" and value else value)
            rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                    "metadata": obj["metadata"]}})
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(self.rv)},
                "columnDefinitions": definitions, "rows": rows}

    @staticmethod
    def _json(payload: dict[str, Any], status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(payload, status=status)

    # ---- store ----

    def _bucket(self, rdef: ResourceDef) -> dict[tuple[str | None, str], dict[str, Any]]:
        return self.store[rdef.key]

    def _get(self, rdef: ResourceDef, ns: str | None, name: str) -> dict[str, Any]:
        obj = self._bucket(rdef).get((ns if rdef.namespaced else None, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{rdef.plural} "{name}" not found')
        return copy.deepcopy(obj)

    def _list(self, rdef: ResourceDef, ns: str | None, labels: str | None, fields: str | None) -> dict[str, Any]:
        items = [copy.deepcopy(o) for (o_ns, _), o in sorted(self._bucket(rdef).items(), key=lambda kv: str(kv[0]))
                 if (ns is None or o_ns == ns) and _match_labels(o["metadata"].get("labels") or {}, labels)
                 and _match_fields(o, fields)]
        return {"kind": f"{rdef.kind}List", "apiVersion": rdef.api_version,
                "metadata": {"resourceVersion": str(self.rv)}, "items": items}

    def _put(self, rdef: ResourceDef, ns: str | None, name: str, obj: dict[str, Any], event: str = "ADDED") -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if event == "DELETED":
            self._bucket(rdef).pop((ns, name), None)
        else:
            self._bucket(rdef)[(ns, name)] = obj
        self.history.append((self.rv, rdef.key, {"type": event, "object": copy.deepcopy(obj)}))

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def _validate(self, rdef: ResourceDef, obj: dict[str, Any]) -> None:
        if rdef.schema is None:
            return
        apply_defaults(rdef.schema, obj)
        errors = sorted(jsonschema.Draft7Validator(rdef.schema).iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            detail = "; ".join(f"{'.'.join(str(p) for p in e.path) or '<root>'}: {e.message}" for e in errors)
            raise ApiError(422, "Invalid", f'{rdef.kind}.{rdef.group} "{obj["metadata"].get("name")}" is invalid: '
                                           f"{detail}")

    async def _create(self, rdef: ResourceDef, ns: str | None, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ApiError(400, "BadRequest", "the body of a create must be an object")
        self.created.append(copy.deepcopy(data))
        obj = copy.deepcopy(data)
        meta = obj.setdefault("metadata", {})
        if rdef.namespaced:
            if meta.get("namespace") and ns and meta["namespace"] != ns:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the URL")
            meta["namespace"] = ns or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "metadata.name or metadata.generateName is required")
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        key = (meta.get("namespace"), meta["name"])
        if key in self._bucket(rdef):
            raise ApiError(409, "AlreadyExists", f'{rdef.plural} "{meta["name"]}" already exists')
        obj["apiVersion"], obj["kind"] = rdef.api_version, rdef.kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta.pop("deletionTimestamp", None)
        if rdef.status_subresource and rdef.group:  # CR status is ignored on create
            obj.pop("status", None)
        self._create_defaults(rdef, obj)
        self._validate(rdef, obj)
        self._put(rdef, key[0], key[1], obj)
        if rdef.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self.register_crd(obj)
        await self._notify()
        return copy.deepcopy(obj)

    def _create_defaults(self, rdef: ResourceDef, obj: dict[str, Any]) -> None:
        if rdef.key == ("", "pods"):
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif rdef.key == ("", "secrets"):
            data = obj.setdefault("data", {})
            for k, v in (obj.pop("stringData", None) or {}).items():
                data[k] = base64.b64encode(v.encode()).decode()
        elif rdef.key == ("", "services"):
            if obj["spec"].get("clusterIP") != "None":  # headless Services get none
                key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                if key not in self.cluster_ips:
                    n = len(self.cluster_ips) + 1
                    self.cluster_ips[key] = f"{self.service_ip_prefix}.{n // 250}.{n % 250 + 2}"
                obj["spec"]["clusterIP"] = self.cluster_ips[key]
                obj["spec"]["clusterIPs"] = [obj["spec"]["clusterIP"]]
        elif rdef.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            obj["status"] = {"conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                                            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"}],
                             "acceptedNames": obj["spec"]["names"],
                             "storedVersions": [obj["spec"]["versions"][0]["name"]]}

    async def _write(self, rdef: ResourceDef, old: dict[str, Any], new: dict[str, Any],
                     sub: str | None) -> dict[str, Any]:
        """Applies a replace/patch result with the API server's rules for metadata and status."""
        ns, name = old["metadata"].get("namespace"), old["metadata"]["name"]
        if sub not in (None, "status"):
            raise ApiError(404, "NotFound", f"subresource {sub} is not served")
        if sub == "status":
            result = copy.deepcopy(old)
            result["status"] = new.get("status")
        else:
            result = copy.deepcopy(new)
            if rdef.status_subresource:
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "generation", "namespace", "name"):
                if k in old["metadata"]:
                    result["metadata"][k] = old["metadata"][k]
                else:
                    result["metadata"].pop(k, None)
            result["apiVersion"], result["kind"] = rdef.api_version, rdef.kind
            if {k: v for k, v in result.items() if k not in ("metadata", "status")} != \
                    {k: v for k, v in old.items() if k not in ("metadata", "status")}:
                result["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            self._validate(rdef, result)
        result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if result == old:
            return result  # a no-op write changes nothing, not even the resourceVersion
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            self._put(rdef, ns, name, result, "DELETED")
            await self._collect_garbage()
        else:
            self._put(rdef, ns, name, result, "MODIFIED")
        await self._notify()
        return copy.deepcopy(result)

    async def _replace(self, rdef: ResourceDef, ns: str | None, name: str, sub: str | None,
                       data: Any) -> dict[str, Any]:
        old = self._get(rdef, ns, name)
        sent_rv = (data.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rdef.plural} "{name}": the object has '
                                            f"been modified; please apply your changes to the latest version")
        return await self._write(rdef, old, data, sub)

    async def _patch(self, rdef: ResourceDef, ns: str | None, name: str, sub: str | None, data: Any,
                     ctype: str) -> dict[str, Any]:
        old = self._get(rdef, ns, name)
        if "json-patch" in ctype:
            new = json_patch(old, data)
        elif "apply-patch" in ctype:
            raise ApiError(415, "UnsupportedMediaType", "server-side apply is not emulated")
        else:  # merge-patch and strategic-merge-patch
            new = merge_patch(old, data)
        sent_rv = (data.get("metadata") or {}).get("resourceVersion") if isinstance(data, dict) else None
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rdef.plural} "{name}"')
        return await self._write(rdef, old, new, sub)

    @staticmethod
    def _graceful(rdef: ResourceDef, obj: dict[str, Any], grace: int | None) -> bool:
        """A running pod is deleted gracefully: marked, then removed once its kubelet has killed it."""
        return rdef.key == ("", "pods") and grace != 0 and \
            (obj.get("status") or {}).get("phase") not in ("Failed", "Succeeded")

    async def _delete(self, rdef: ResourceDef, ns: str | None, name: str, grace: int | None = None) -> dict[str, Any]:
        obj = self._get(rdef, ns, name)
        key_ns = ns if rdef.namespaced else None
        if self._graceful(rdef, obj, grace) and not obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["deletionGracePeriodSeconds"] = grace if grace is not None else \
                    obj["spec"].get("terminationGracePeriodSeconds", 30)
                self._put(rdef, key_ns, name, obj, "MODIFIED")
                await self._notify()
            return obj
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                self._put(rdef, key_ns, name, obj, "MODIFIED")
                await self._notify()
            return obj
        self._put(rdef, key_ns, name, obj, "DELETED")
        await self._collect_garbage()
        await self._notify()
        return obj

    async def _collect_garbage(self) -> None:
        """Background cascading deletion: objects whose every owner is gone are deleted too."""
        while True:
            uids = {o["metadata"]["uid"] for objs in self.store.values() for o in objs.values()}
            orphans = [(rdef_key, key, o) for rdef_key, objs in self.store.items() for key, o in objs.items()
                       if o["metadata"].get("ownerReferences")
                       and not any(ref["uid"] in uids for ref in o["metadata"]["ownerReferences"])
                       and not o["metadata"].get("deletionTimestamp")]
            if not orphans:
                return
            for rdef_key, (ns, name), o in orphans:
                rdef = self.defs[rdef_key]
                if o["metadata"].get("finalizers") or self._graceful(rdef, o, None):
                    o["metadata"]["deletionTimestamp"] = _now()
                    self._put(rdef, ns, name, o, "MODIFIED")
                else:
                    self._put(rdef, ns, name, o, "DELETED")

    # ---- watch ----

    async def close_watches(self) -> None:
        """Ends every open watch, so that the HTTP server stops at once instead of waiting them out."""
        self.closing = True
        async with self.changed:
            self.changed.notify_all()

    async def _watch(self, raw: aiohttp.web.BaseRequest, rdef: ResourceDef,
                     ns: str | None) -> aiohttp.web.StreamResponse:
        q = raw.query
        labels, fields = q.get("labelSelector"), q.get("fieldSelector")
        timeout = float(q.get("timeoutSeconds") or 1800)
        since = int(q.get("resourceVersion") or 0)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def matches(obj: dict[str, Any]) -> bool:
            return (ns is None or obj["metadata"].get("namespace") == ns) and \
                _match_labels(obj["metadata"].get("labels") or {}, labels) and _match_fields(obj, fields)

        if since == 0:
            for item in self._list(rdef, ns, labels, fields)["items"]:
                await response.write(json.dumps({"type": "ADDED", "object": item}).encode() + b"\n")
            since = self.rv
        try:
            while loop.time() < deadline and not self.closing:
                # history is in resourceVersion order: start at the first event newer than `since`
                # (a scan of it all, per watcher per change, slows the emulator as a run goes on)
                start = bisect.bisect_right(self.history, since, key=lambda h: h[0])
                for rv, key, event in self.history[start:]:
                    since = rv
                    if key == rdef.key and matches(event["object"]):
                        await response.write(json.dumps(event).encode() + b"\n")
                async with self.changed:
                    # A predicate, not a bare wait: events appended while this watch was writing to a
                    # slow client were notified before it waited, and must not wait for the next one.
                    try:
                        await asyncio.wait_for(self.changed.wait_for(lambda seen=since: self.rv > seen or self.closing),
                                               max(0.01, min(5.0, deadline - loop.time())))
                    except TimeoutError:
                        pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response
