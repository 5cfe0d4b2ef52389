"""`--priority auto` (issue 12 defect 5): kopf pauses *every* replica that shares the highest
peering priority, so with the chart's fixed priority `replicaCount: 2` reconciled nothing;
`auto` draws one per process. Two replicas peering on the real control plane, one acting and
the other taking over, are in test_real_operator.py."""

from __future__ import annotations

import pytest


def test_priority_auto_gives_each_process_its_own():
    from kastor.operator.__main__ import build_parser

    drawn = {build_parser().parse_args(["--priority", "auto"]).priority for _ in range(20)}
    assert len(drawn) == 20 and all(1 <= p < 2**31 for p in drawn)
    assert build_parser().parse_args(["--priority", "7"]).priority == 7
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--priority", "high"])
