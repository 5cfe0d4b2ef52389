"""Kastor's processes and their plumbing: head (GCS), node agent, worker, stores, protocol.

Nothing here is public API; drivers use the `kastor` package (the `client/` folder).
"""
