"""Addresses init() cannot use fail at once with the fix, before any connection is tried."""

import kastor
import pytest


def test_a_ray_address_points_to_kastor_scheme():
    with pytest.raises(ValueError, match=r"kastor\.init\('kastor://head\.example:10001'\)"):
        kastor.init("ray://head.example:10001", token="t")
    assert not kastor.is_initialized()


def test_an_unknown_scheme_names_the_two_forms():
    with pytest.raises(ValueError, match=r"'host:port'.*'kastor://host:port'"):
        kastor.init("http://head.example:8265", token="t")
