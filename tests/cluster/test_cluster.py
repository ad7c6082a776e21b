"""The cluster test: three NATS nodes (R3), PostgreSQL, two instances of each service; one NATS node
and one instance of each service SIGKILLed under load.  Nothing may be lost or duplicated, and
every relay publish, ladder step and SMS happens exactly once across the instances."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cluster.run import ClusterConfig, run_cluster

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("TEST_POSTGRES_URL"),
        reason="the cluster test needs PostgreSQL (set TEST_POSTGRES_URL): two instances share each database",
    ),
]


@pytest.mark.timeout(420)
async def test_cluster_loses_nothing_and_acts_once_when_a_node_and_instances_die(tmp_path: Path) -> None:
    config = ClusterConfig(postgres_url=os.environ["TEST_POSTGRES_URL"])
    summary = await run_cluster(config, tmp_path)
    report = json.dumps(summary, indent=2, ensure_ascii=False, default=str)
    (tmp_path / "cluster-summary.json").write_text(report, encoding="utf-8")
    print(report)
    assert summary["passed"], "\n".join(summary["problems"])
