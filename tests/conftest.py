"""Fixtures shared by the test modules."""

import kastor
import pytest


@pytest.fixture(scope="module")
def embedded_cluster():
    """`kastor.init()` with no address (head, node agent and workers as real local processes),
    shared by one test module; 2 CPUs, as on the CI machine."""
    info = kastor.init(num_cpus=2)
    yield info
    kastor.shutdown()
