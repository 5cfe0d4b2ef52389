"""Kastor's processes and their plumbing: head (GCS), node agent, worker, stores, protocol.

Nothing here is public API; drivers use the `kastor` package (the `client/` folder).
"""

# The package's version (pyproject.toml's), here so that runtime modules can name it without
# importing the public package; `kastor.__version__` is this string.
__version__ = "0.1.0"
