"""What ``bench/scale.py`` measures on: a data set's manifest, or a small system it fills itself.

The manifest is the one ``bench/scale_data.py`` writes (its docstring lists the keys); ``fill``
writes one of the same shape for a SQLite system filled through intake's API (``--fill N``).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Services, start_nats, wait_until_drained  # noqa: E402 - after the sys.path line

# --- The data set ------------------------------------------------------------------------------


@dataclass
class DataSet:
    """What the benchmark needs of the manifest, whatever names the generator gave the keys."""

    backend: str
    db_urls: dict[str, str]
    busiest_team: str
    county: str
    phones: list[str]
    codes: list[dict[str, str]]
    deputy: str
    env: dict[str, str] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)


def _db_url(value: str, folder: Path) -> str:
    """A database of the data set: a SQLite file is always read from ``folder``, whatever path the
    manifest recorded, so that a copy of a data set is measured (and migrated) as the copy."""
    if value.startswith("sqlite"):
        return f"sqlite:///{(folder / Path(value.split(':///', 1)[-1]).name).resolve()}"
    return value if "://" in value else f"sqlite:///{(folder / Path(value).name).resolve()}"


def _county_of(team_code: str) -> str:
    """The county a leader of the team's bureau reads; the city's own team has none, so a large county."""
    county = team_code[:6]
    return "411681" if county.endswith("00") else county


def load_data_set(folder: Path) -> DataSet:
    """The manifest of ``bench/scale_data.py`` (its docstring lists the keys)."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    team = str(manifest["busiest_team"])
    accounts = manifest.get("accounts", {})
    leader = str(accounts.get("leader") or f"leader-{_county_of(team)}")
    deputy = manifest.get("deputy") or {}
    return DataSet(
        backend=str(manifest.get("backend", "sqlite")),
        db_urls={name: _db_url(str(url), folder) for name, url in manifest["databases"].items()},
        busiest_team=team,
        county=leader.removeprefix("leader-"),
        phones=[str(p["phone"] if isinstance(p, dict) else p) for p in manifest.get("sample_phones", [])],
        codes=[
            {"tracking_code": q["tracking_code"], "query_secret": q["query_secret"]}
            for q in manifest.get("sample_queries", [])
        ],
        deputy=str(deputy.get("account", "deputy1")),
        env={str(k).upper(): str(v) for k, v in manifest.get("keys", {}).items()},
        counts=dict(manifest.get("counts", {})),
    )


# --- --fill: a small system filled through the API --------------------------------------------


async def fill(workdir: Path, count: int) -> Path:
    """Start fresh services, record ``count`` complaints through intake, write a manifest for them."""
    from bench.pipeline import LightClient, complaint_body

    (workdir / "fill").mkdir()
    nats_process, nats_url = start_nats(workdir / "fill")
    services = Services(workdir, nats_url, None)
    try:
        await services.start()
        async with httpx.AsyncClient(base_url=services.urls["intake"], timeout=60) as signer:
            token = (
                await signer.post("/api/v1/auth/token", data={"username": "operator1", "password": "demo"})
            ).json()["access_token"]
        client = LightClient(services.urls["intake"], token=token, connections=8, answer_timeout=60)
        await client.open()
        codes: list[dict[str, str]] = []
        for index in range(count):
            status, answer = await client.post_json("/api/v1/complaints", complaint_body(index))
            if status == 201 and len(codes) < 50:
                codes.append(
                    {"tracking_code": answer["tracking_code"], "query_secret": answer["query_secret"]}
                )
        await client.close()
        await wait_until_drained(nats_url, timeout=120)
    finally:
        await services.stop()
        nats_process.terminate()
        nats_process.wait(timeout=10)
    with sqlite3.connect(services.db_urls["verification"].split("///", 1)[1]) as conn:
        team = conn.execute(
            "SELECT team_code FROM verification_task GROUP BY team_code ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
    manifest = {
        "backend": "sqlite",
        "databases": services.db_urls,
        "busiest_team": team,
        "sample_phones": [
            complaint_body(i)["complainant"]["phone"] for i in range(0, count, max(1, count // 20))
        ],
        "sample_queries": codes,
        "deputy": {"account": "deputy1"},
        "counts": {"complaints": count},
    }
    (workdir / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return workdir
