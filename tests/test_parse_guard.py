"""The test process's guard against CPython gh-106905 (tests/conftest.py): a collection run inside
`ast.parse` may run a finalizer that parses again, which on 3.11.7 makes the outer parse raise
"SystemError: AST constructor recursion depth mismatch" (and pytest, reporting a failure with
`ast.parse`, end the whole run with INTERNALERROR)."""

import ast
import gc


class _ParsesWhenCollected:
    """A reference cycle whose finalizer parses, as a coroutine closed late by the collector
    does when its error goes to the unraisable hook and is formatted with ^^^ markers."""

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self) -> None:
        ast.parse("(a + b) * c[d]")


def test_a_parse_survives_finalizers_that_parse_during_it():
    source = "\n".join(f"x{i} = [(a + b) * c[d] for a in range(3)]" for i in range(2000))
    threshold = gc.get_threshold()
    # The default first-generation threshold: the cycles below are collected by the parse's own
    # allocations (tens of thousands of AST nodes), so their finalizers run inside it.
    gc.set_threshold(700, 10, 10)
    try:
        for _ in range(5):
            gc.collect()
            for _ in range(50):
                _ParsesWhenCollected()
            assert isinstance(ast.parse(source), ast.Module)
    finally:
        gc.set_threshold(*threshold)
        gc.collect()
