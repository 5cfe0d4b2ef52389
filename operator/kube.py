"""A thin, dict-in dict-out layer over the `kubernetes` client.

The reconcilers work on plain dicts (what the builders produce and the tests assert), so
this module only moves them over the wire and turns 404/409 into None/False.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Protocol

import kubernetes
from kastor.runtime import k8s_contract as contract
from kubernetes.client.exceptions import ApiException

# (connect, read) seconds for every API call. The client's default is no timeout at all, and one
# call stuck on a half-open connection would hold its resource's lock for ever: its resync (which
# never runs twice at once) and its pod events would then wait behind it, and the resource would
# stop being reconciled. A call that times out fails the reconcile, which the next resync retries.
REQUEST_TIMEOUT = (5.0, 30.0)


def load_config() -> None:
    """In a pod, the service account; elsewhere KUBECONFIG / ~/.kube/config."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


def selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))



def namespace_terminating(error: BaseException) -> bool:
    """Whether the API server refused a write because its namespace is being deleted (403 with
    the cause NamespaceTerminating): nothing can be created there any more, so the resource is
    not retried soon and the refusal is not an error worth a traceback."""
    if not isinstance(error, ApiException) or error.status != 403:
        return False
    try:
        details = (json.loads(error.body or "{}") or {}).get("details") or {}
    except (TypeError, ValueError):
        return False
    return any(cause.get("reason") == "NamespaceTerminating" for cause in details.get("causes") or [])

class PodSource(Protocol):
    """Where reconcilers read the pods they own (`pod_cache.PodCache`), told of every write."""

    def list(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]: ...
    def created(self, namespace: str, pod: dict[str, Any]) -> None: ...
    def deleted(self, namespace: str, name: str) -> None: ...


class Kube:
    """`pods`: the cache reconcilers read their pods from (no LIST per reconcile); without one,
    every `list_pods` is a LIST (tests, and the cleanup paths that pass `live=True`)."""

    def __init__(self, api_client: kubernetes.client.ApiClient | None = None,
                 request_timeout: tuple[float, float] = REQUEST_TIMEOUT, pods: PodSource | None = None):
        self.api_client = api_client or kubernetes.client.ApiClient()
        self._pods = pods
        self._call: dict[str, Any] = {"_preload_content": False, "_request_timeout": request_timeout}
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.apps = kubernetes.client.AppsV1Api(self.api_client)
        self.policy = kubernetes.client.PolicyV1Api(self.api_client)

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        return json.loads(response.data)

    # ---- pods ----

    def list_pods(self, namespace: str, labels: dict[str, str], live: bool = False) -> list[dict[str, Any]]:
        """The pods with these labels: from the pod cache if there is one (unless `live`), else a LIST."""
        if self._pods is not None and not live:
            return self._pods.list(namespace, labels)
        reply = self.core.list_namespaced_pod(namespace, label_selector=selector(labels), **self._call)
        return self._json(reply)["items"]

    def create_pod(self, namespace: str, pod: dict[str, Any]) -> dict[str, Any] | None:
        try:
            created = self._json(self.core.create_namespaced_pod(namespace, pod, **self._call))
        except ApiException as e:
            if e.status == 409:
                return None
            raise
        if self._pods is not None:
            self._pods.created(namespace, created)
        return created

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> bool:
        """Deletes the pod (with its own grace period unless `grace_seconds` says otherwise: 0 is a
        force delete, for a pod nothing can still be running); False if it was gone already."""
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace_seconds, **self._call)
            if self._pods is not None:
                self._pods.deleted(namespace, name)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    # ---- nodes ----

    def read_node(self, name: str) -> dict[str, Any] | None:
        """The Node object, or None if it does not exist (a deleted, lost node).

        Raises PermissionError if the operator may not read Nodes (its ClusterRole lacks `get`)."""
        try:
            return self._json(self.core.read_node(name, **self._call))
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status == 403:
                raise PermissionError(f"the operator may not get Node {name}: grant `get` on `nodes` in its "
                                      f"ClusterRole (the kastor-operator chart does) so it can replace pods on "
                                      f"lost nodes") from None
            raise

    # ---- statefulsets (the managed Redis) ----

    def read_statefulset(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The StatefulSet as stored, or None if it does not exist."""
        try:
            return self._json(self.apps.read_namespaced_stateful_set(name, namespace, **self._call))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def create_statefulset(self, namespace: str, statefulset: dict[str, Any]) -> None:
        """Creates the StatefulSet; one of that name created meanwhile is not an error."""
        try:
            self.apps.create_namespaced_stateful_set(namespace, statefulset, **self._call)
        except ApiException as e:
            if e.status != 409:
                raise

    def patch_statefulset(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge-patches a StatefulSet (its pod template after a spec change)."""
        self.apps.patch_namespaced_stateful_set(name, namespace, patch, _content_type="application/merge-patch+json",
                                                **self._call)

    # ---- services and secrets ----

    def ensure_service(self, namespace: str, service: dict[str, Any]) -> dict[str, Any] | None:
        """Creates the Service unless one of that name exists (then returns that one): read first,
        because a create of a Service that exists is not always a 409 (a fixed nodePort is
        "already allocated": 422)."""
        try:
            return self._json(self.core.read_namespaced_service(service["metadata"]["name"], namespace,
                                                                **self._call))
        except ApiException as e:
            if e.status != 404:
                raise
        try:
            self.core.create_namespaced_service(namespace, service, **self._call)
        except ApiException as e:
            if e.status != 409:
                raise
        return None

    def patch_service(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge-patches a Service (its type and ports after a spec change)."""
        self.core.patch_namespaced_service(name, namespace, patch, _content_type="application/merge-patch+json",
                                           **self._call)

    def ensure_claim(self, namespace: str, claim: dict[str, Any]) -> None:
        """Creates a PersistentVolumeClaim unless it exists (a DetachedActor's state volume): a GET
        first, so a reconcile of an actor whose claim exists writes nothing."""
        try:
            self.core.read_namespaced_persistent_volume_claim(claim["metadata"]["name"], namespace, **self._call)
            return
        except ApiException as e:
            if e.status != 404:
                raise
        try:
            self.core.create_namespaced_persistent_volume_claim(namespace, claim, **self._call)
        except ApiException as e:
            if e.status != 409:
                raise

    def read_pdb(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The PodDisruptionBudget, or None if it does not exist."""
        try:
            return self._json(self.policy.read_namespaced_pod_disruption_budget(name, namespace, **self._call))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def create_pdb(self, namespace: str, budget: dict[str, Any]) -> None:
        """Creates a PodDisruptionBudget; one of that name already there is not an error."""
        try:
            self.policy.create_namespaced_pod_disruption_budget(namespace, budget, **self._call)
        except ApiException as e:
            if e.status != 409:
                raise

    def delete_pdb(self, namespace: str, name: str) -> None:
        """Deletes a PodDisruptionBudget; one already gone is not an error."""
        try:
            self.policy.delete_namespaced_pod_disruption_budget(name, namespace, **self._call)
        except ApiException as e:
            if e.status != 404:
                raise

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret object as stored (metadata included), or None if it does not exist."""
        try:
            return self._json(self.core.read_namespaced_secret(name, namespace, **self._call))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    @staticmethod
    def secret_data(secret: dict[str, Any]) -> dict[str, str]:
        """A Secret object's data, decoded."""
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        return data

    def get_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's decoded data, or None if it does not exist."""
        secret = self.read_secret(namespace, name)
        if secret is None:
            return None
        return self.secret_data(secret)

    def create_secret(self, namespace: str, secret: dict[str, Any]) -> None:
        try:
            self.core.create_namespaced_secret(namespace, secret, **self._call)
        except ApiException as e:
            if e.status != 409:
                raise

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self.core.create_namespaced_event(namespace, event, **self._call)

    # ---- our custom resources ----

    def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._json(self.custom.get_namespaced_custom_object(
                contract.GROUP, contract.VERSION, namespace, plural, name, **self._call))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def create_custom(self, plural: str, namespace: str, body: dict[str, Any]) -> None:
        """Creates one of our custom resources; one of that name existing already is not an error."""
        try:
            self.custom.create_namespaced_custom_object(contract.GROUP, contract.VERSION, namespace, plural, body,
                                                        **self._call)
        except ApiException as e:
            if e.status != 409:
                raise

    def patch_custom(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge-patches one of our custom resources (not its status); one deleted meanwhile is not an error."""
        try:
            self.custom.patch_namespaced_custom_object(contract.GROUP, contract.VERSION, namespace, plural, name,
                                                       patch, _content_type="application/merge-patch+json",
                                                       **self._call)
        except ApiException as e:
            if e.status != 404:
                raise

    def delete_custom(self, plural: str, namespace: str, name: str) -> None:
        """Deletes one of our custom resources; one already gone is not an error."""
        try:
            self.custom.delete_namespaced_custom_object(contract.GROUP, contract.VERSION, namespace, plural, name,
                                                        **self._call)
        except ApiException as e:
            if e.status != 404:
                raise

    def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patches the status subresource; a resource deleted meanwhile is not an error."""
        try:
            self.custom.patch_namespaced_custom_object_status(
                contract.GROUP, contract.VERSION, namespace, plural, name, {"status": status},
                _content_type="application/merge-patch+json", **self._call)
        except ApiException as e:
            if e.status != 404:
                raise
