"""The Kastor Kubernetes operator, importable only as `kastor.operator`.

Importing this package is cheap and has no side effects: the kopf handlers live in
`kastor.operator.handlers` and register only when that module is imported (by
`python -m kastor.operator` or `kopf run -m kastor.operator.handlers`). The object
builders (`kastor.operator.build_*`) are pure functions, tested without a cluster.
"""

if __name__ == "operator":
    # Imported under the standard library's name: a Python whose start-up had not imported the
    # stdlib's `operator` yet, run with a Kastor checkout's root on sys.path (`python -c ...` or
    # `python -S` from the root). Hand the importer the real `operator` module instead: the
    # import system returns whatever sys.modules holds once this body has run. Only modules that
    # never import `operator` themselves may be used here (importlib.util would: contextlib).
    import os as _os
    import sys as _sys
    from importlib.machinery import ModuleSpec as _Spec
    from importlib.machinery import SourceFileLoader as _Loader

    _path = _os.path.join(_os.path.dirname(_os.__file__), "operator.py")
    _loader = _Loader("operator", _path)
    _stdlib_operator = type(_sys)("operator")
    _stdlib_operator.__spec__ = _Spec("operator", _loader, origin=_path)
    _stdlib_operator.__file__, _stdlib_operator.__loader__ = _path, _loader
    _sys.modules["operator"] = _stdlib_operator
    _loader.exec_module(_stdlib_operator)
