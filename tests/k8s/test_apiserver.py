"""The emulated API server keeps the promises the operator relies on (each one is a place
where kmock 0.8's shipped KubernetesEmulator differs from a real API server)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import kmock
import pytest
import requests
import yaml

from .apiserver import ApiServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    holder = {}

    async def start():
        holder["api"] = ApiServer()
        await holder["api"].__aenter__()
        holder["server"] = kmock.Server(holder["api"])
        await holder["server"].__aenter__()

    async def stop():
        await holder["server"].__aexit__(None, None, None)
        await holder["api"].__aexit__(None, None, None)

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    url = str(holder["server"].url).rstrip("/")
    crd = yaml.safe_load((REPO / "crds" / "kastor.dev_detachedactors.yaml").read_text())
    assert requests.post(f"{url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd).status_code == 201
    yield url
    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


PODS = "/api/v1/namespaces/default/pods"
DAS = "/apis/kastor.dev/v1alpha1/namespaces/default/detachedactors"


def pod(name: str = "", labels: dict | None = None, **meta) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}, **meta},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}


def test_create_fills_server_side_metadata(api):
    r = requests.post(api + PODS, json=pod(generateName="web-", name=""))
    assert r.status_code == 201
    meta = r.json()["metadata"]
    assert meta["name"].startswith("web-") and len(meta["name"]) == 9
    assert meta["namespace"] == "default" and meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert requests.post(api + PODS, json=pod(meta["name"])).status_code == 409


def test_resource_version_moves_on_real_writes_only(api):
    first = requests.post(api + PODS, json=pod("rv")).json()["metadata"]["resourceVersion"]
    merge = {"Content-Type": "application/merge-patch+json"}
    second = requests.patch(f"{api}{PODS}/rv", data=json.dumps({"metadata": {"labels": {"a": "b"}}}),
                            headers=merge).json()
    assert int(second["metadata"]["resourceVersion"]) > int(first)
    assert second["metadata"]["generation"] == 1  # metadata is not spec
    same = requests.patch(f"{api}{PODS}/rv", data=json.dumps({"metadata": {"labels": {"a": "b"}}}), headers=merge)
    assert same.json()["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]
    spec = requests.patch(f"{api}{PODS}/rv", data=json.dumps({"spec": {"nodeName": "n"}}), headers=merge).json()
    assert spec["metadata"]["generation"] == 2


def test_status_subresource_is_separate(api):
    requests.post(api + PODS, json=pod("st"))
    merge = {"Content-Type": "application/merge-patch+json"}
    main = requests.patch(f"{api}{PODS}/st", data=json.dumps({"status": {"phase": "Running"}}), headers=merge).json()
    assert main["status"]["phase"] == "Pending"  # a main-resource write keeps status
    sub = requests.patch(f"{api}{PODS}/st/status", data=json.dumps({"status": {"phase": "Running"},
                                                                     "spec": {"nodeName": "x"}}), headers=merge).json()
    assert sub["status"]["phase"] == "Running" and "nodeName" not in sub["spec"]


def test_json_patch_test_failure_is_422_and_put_checks_the_version(api):
    created = requests.post(api + PODS, json=pod("jp", labels={"v": "1"})).json()
    ops = [{"op": "test", "path": "/metadata/labels/v", "value": "2"},
           {"op": "replace", "path": "/metadata/labels/v", "value": "3"}]
    r = requests.patch(f"{api}{PODS}/jp", data=json.dumps(ops), headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 422
    stale = {**created, "metadata": {**created["metadata"], "resourceVersion": "1"}}
    assert requests.put(f"{api}{PODS}/jp", json=stale).status_code == 409
    fresh = requests.put(f"{api}{PODS}/jp", json={**created, "metadata": {**created["metadata"], "labels": {"v": "9"}}})
    assert fresh.status_code == 200 and fresh.json()["metadata"]["labels"] == {"v": "9"}


def test_label_and_field_selectors(api):
    for name, labels in (("s-a", {"app": "x", "tier": "web"}), ("s-b", {"app": "x"}), ("s-c", {"app": "y"})):
        requests.post(api + PODS, json=pod(name, labels))

    def names(selector: str, field: str = "") -> list[str]:
        params = {"labelSelector": selector, **({"fieldSelector": field} if field else {})}
        return sorted(p["metadata"]["name"] for p in requests.get(api + PODS, params=params).json()["items"]
                      if p["metadata"]["name"].startswith("s-"))

    assert names("app=x") == ["s-a", "s-b"]
    assert names("app!=x") == ["s-c"]
    assert names("app in (x,y),tier") == ["s-a"]
    assert names("app notin (x)") == ["s-c"]
    assert names("app,!tier") == ["s-b", "s-c"]
    assert names("app", "metadata.name=s-b") == ["s-b"]


def test_watch_resumes_from_a_resource_version_and_times_out(api):
    rv = requests.get(api + PODS).json()["metadata"]["resourceVersion"]
    requests.post(api + PODS, json=pod("w-1", {"watch": "me"}))
    requests.post(api + PODS, json=pod("w-2", {"watch": "not"}))
    start = time.monotonic()
    r = requests.get(api + PODS, params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1",
                                         "labelSelector": "watch=me"}, stream=True, timeout=10)
    events = [json.loads(line) for line in r.iter_lines() if line]
    assert 0.9 < time.monotonic() - start < 5
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w-1")]


def test_finalizers_hold_deletion_and_owners_collect_dependents(api):
    owner = requests.post(api + PODS, json=pod("owner", finalizers=["x/y"])).json()
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner["metadata"]["uid"]}
    requests.post(api + "/api/v1/namespaces/default/configmaps",
                  json={"metadata": {"name": "dep", "ownerReferences": [ref]}, "data": {}})
    held = requests.delete(f"{api}{PODS}/owner", params={"gracePeriodSeconds": "0"}).json()
    assert held["metadata"]["deletionTimestamp"]
    assert requests.get(f"{api}{PODS}/owner").status_code == 200
    requests.patch(f"{api}{PODS}/owner", data=json.dumps({"metadata": {"finalizers": None}}),
                   headers={"Content-Type": "application/merge-patch+json"})
    assert requests.get(f"{api}{PODS}/owner").status_code == 404
    assert requests.get(api + "/api/v1/namespaces/default/configmaps/dep").status_code == 404  # garbage-collected


def test_running_pods_are_deleted_gracefully(api):
    requests.post(api + PODS, json=pod("graceful"))
    requests.patch(f"{api}{PODS}/graceful/status", data=json.dumps({"status": {"phase": "Running"}}),
                   headers={"Content-Type": "application/merge-patch+json"})
    assert requests.delete(f"{api}{PODS}/graceful").json()["metadata"]["deletionTimestamp"]
    assert requests.get(f"{api}{PODS}/graceful").status_code == 200  # until the kubelet confirms
    requests.delete(f"{api}{PODS}/graceful", params={"gracePeriodSeconds": "0"})
    assert requests.get(f"{api}{PODS}/graceful").status_code == 404


def test_created_crds_are_served_validated_and_defaulted(api):
    discovery = requests.get(api + "/apis/kastor.dev/v1alpha1").json()
    assert {r["name"] for r in discovery["resources"]} >= {"detachedactors", "detachedactors/status"}
    bad = {"apiVersion": "kastor.dev/v1alpha1", "kind": "DetachedActor", "metadata": {"name": "bad"},
           "spec": {"clusterRef": "c", "actorClass": "m:C", "maxRestarts": -7}}
    r = requests.post(api + DAS, json=bad)
    assert r.status_code == 422 and "maxRestarts" in r.json()["message"]
    good = requests.post(api + DAS, json={**bad, "metadata": {"name": "good"},
                                          "spec": {"clusterRef": "c", "actorClass": "m:C"}}).json()
    assert good["spec"]["maxRestarts"] == 0 and good["spec"]["maxConcurrency"] == 1  # schema defaults applied


def test_a_recreated_service_keeps_its_cluster_ip(api):
    """The kubelet harness's hosts file is append-only: a Service name never changes address."""
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "again"},
           "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}
    services = api + "/api/v1/namespaces/default/services"
    first = requests.post(services, json=svc).json()["spec"]["clusterIP"]
    other = requests.post(services, json={**svc, "metadata": {"name": "other"}}).json()["spec"]["clusterIP"]
    assert requests.delete(f"{services}/again").status_code == 200
    assert requests.post(services, json=svc).json()["spec"]["clusterIP"] == first != other


def test_core_discovery_and_namespaces(api):
    assert requests.get(api + "/api/v1").json()["groupVersion"] == "v1"
    assert requests.get(api + "/api/v1/").status_code == 200
    names = {n["metadata"]["name"] for n in requests.get(api + "/api/v1/namespaces").json()["items"]}
    assert {"default", "kube-system"} <= names
    assert requests.get(api + "/api/v1/namespaces/default").json()["kind"] == "Namespace"
