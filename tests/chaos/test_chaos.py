"""The short fault test CI runs: 300 complaints, two NATS restarts, a kill of each service, poison.

The full version is ``make chaos`` (``python -m tests.chaos``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.chaos.run import ChaosConfig, describe, run_chaos

BACKENDS = ["sqlite"] + (["postgres"] if os.environ.get("TEST_POSTGRES_URL") else [])

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]


@pytest.mark.timeout(480)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_nothing_lost_duplicated_or_stuck_under_faults(backend: str, tmp_path: Path) -> None:
    config = ChaosConfig.short(backend, postgres_url=os.environ.get("TEST_POSTGRES_URL"))
    summary = await run_chaos(config)
    (tmp_path / f"chaos-{backend}.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False, default=str)
    )
    print(describe(summary))
    assert summary["passed"], describe(summary)
