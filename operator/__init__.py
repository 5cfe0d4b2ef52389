"""The Kastor Kubernetes operator, importable only as `kastor.operator`.

Importing this package is cheap and has no side effects: the kopf handlers live in
`kastor.operator.handlers` and register only when that module is imported (by
`python -m kastor.operator` or `kopf run -m kastor.operator.handlers`). The object
builders (`kastor.operator.build_*`) are pure functions, tested without a cluster.
"""
