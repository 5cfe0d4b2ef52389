"""Programs a Kubernetes cluster runs that are written against the public API.

`kastor.kubernetes.actor_pod` is the entry point of a DetachedActor's pod (`kastor actor-pod`):
a driver program like a user's script (`kastor.init`, `@kastor.remote`, `.options`), so it
lives in the public package, above the runtime, which may not import it (tests/test_layering.py).
"""
