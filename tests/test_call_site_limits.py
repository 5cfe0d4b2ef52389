"""What Ray refuses at the call site before anything runs (issue 13, group 1): a function or
actor class too large once pickled (Ray's test_oversized_function), and malformed
`label_selector` / `fallback_strategy` options (Ray's label-selector argument tests); where
well-formed ones place work, tests/test_labels.py."""

import warnings

import kastor
import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("embedded_cluster")

BIG = np.zeros(100 * 1024 * 125)  # 100 MiB: captured by the definitions below


def test_a_function_or_actor_capturing_a_large_object_is_refused_with_the_fix():
    @kastor.remote
    def f():
        return len(BIG)

    @kastor.remote
    class Holder:
        def size(self):
            return len(BIG)

    with pytest.raises(ValueError, match=r"The remote function .*f is too large .*kastor.put"):
        f.remote()
    with pytest.raises(ValueError, match="The actor .*Holder is too large"):
        Holder.remote()


def test_a_mid_sized_function_is_warned_about_and_runs():
    medium = np.ones(2 * 1024 * 1024)  # 16 MiB pickled

    @kastor.remote
    def g():
        return float(medium.sum())

    with pytest.warns(UserWarning, match="MiB pickled: it probably captures a large object"):
        ref = g.remote()
    assert kastor.get(ref, timeout=120) == 2 * 1024 * 1024


@pytest.mark.parametrize("selector", [{"ray.io/accelerator-type": "A100"}, {"region": "!us-west"},
                                      {"zone": "in(a, b)"}, {"zone": "!in(a,b)"}, {"example.com/tier": ""}])
def test_well_formed_label_selectors_are_accepted(selector):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # they are honoured now, not ignored with a warning
        kastor.remote(label_selector=selector)(lambda: 1)


@pytest.mark.parametrize("selector, error, message", [
    ({"-bad": "x"}, ValueError, "Invalid label key name `-bad`"),
    ({"Bad_Prefix/x": "y"}, ValueError, "Invalid label key prefix `Bad_Prefix`"),
    ({"k": "bad value!"}, ValueError, "Invalid label selector value `bad value!`"),
    ({"k": "in(a,,b)"}, ValueError, "Invalid label selector value"),
    ({"k": 5}, TypeError, "must be a string"),
    (["k"], TypeError, "must be a dict"),
])
def test_malformed_label_selectors_fail_at_the_call_site(selector, error, message):
    with pytest.raises(error, match=message):
        kastor.remote(label_selector=selector)(lambda: 1)
    with pytest.raises(error, match=message):
        kastor.remote(num_cpus=0)(lambda: 1).options(label_selector=selector)


def test_fallback_strategy_is_a_list_of_label_selectors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kastor.remote(fallback_strategy=[{"label_selector": {"zone": "a"}}, {"label_selector": {}}])(lambda: 1)
    with pytest.raises(TypeError, match="must be a list"):
        kastor.remote(fallback_strategy={"label_selector": {}})(lambda: 1)
    with pytest.raises(ValueError, match="unsupported option"):
        kastor.remote(fallback_strategy=[{"num_cpus": 1}])(lambda: 1)
    with pytest.raises(ValueError, match=r"fallback_strategy\[0\].label_selector|Invalid label key name"):
        kastor.remote(fallback_strategy=[{"label_selector": {"-bad": "x"}}])(lambda: 1)
