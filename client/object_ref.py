"""ObjectRef: a future for a value owned by the process that created the ref.

The class is defined in `kastor.runtime.object_ref` (the runtime makes refs and must not import
the public package); this is the same class.
"""

from kastor.runtime.object_ref import ObjectRef

__all__ = ["ObjectRef"]
