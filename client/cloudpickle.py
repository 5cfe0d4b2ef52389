"""`kastor.cloudpickle`, as `ray.cloudpickle`: the cloudpickle Kastor serializes with, as a
module, so that `import kastor.cloudpickle` and `from kastor.cloudpickle import dumps` work."""

from cloudpickle import *  # noqa: F403  (the whole public API, as Ray re-exports it)
from cloudpickle import (  # noqa: F401  # noqa: F401
    CloudPickler,
    Pickler,
    dump,
    dumps,
    load,
    loads,
    register_pickle_by_value,
    unregister_pickle_by_value,
)
