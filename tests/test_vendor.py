"""The vendored browser libraries and county outlines: what is checked in is what the lock pins.

No network: scripts/vendor.py fetches only when run by hand (`make vendor`); here the checked-in
files are compared with SHA256SUMS, whose header names the versions package-lock.json pins.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from scripts import vendor
from shared.reference import load_organisation

ROOT = Path(__file__).resolve().parent.parent


def test_vendored_files_match_their_recorded_checksums() -> None:
    assert vendor.check() == []
    assert set(vendor.read_sums()) == set(vendor.vendored_files())


def test_a_changed_or_missing_file_is_caught(tmp_path: Path) -> None:
    for name in vendor.vendored_files():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vendor.STATIC / name, tmp_path / name)
    assert vendor.check(tmp_path) == []
    with (tmp_path / "geo" / "zhoukou.json").open("a", encoding="utf-8") as changed:
        changed.write(" ")
    (tmp_path / "vendor" / "echarts.NOTICE.txt").unlink()
    problems = vendor.check(tmp_path)
    assert len(problems) == 2
    assert any(p.startswith("geo/zhoukou.json: sha256") for p in problems)
    assert "vendor/echarts.NOTICE.txt: missing" in problems


def test_the_lock_pins_exact_versions_and_the_sums_name_them() -> None:
    manifest = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))
    locked = vendor.locked_versions()
    for name, wanted in manifest["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", wanted), f"{name} must be pinned exactly, not {wanted}"
        assert locked[name] == wanted
    header = vendor.SUMS_FILE.read_text(encoding="utf-8")
    for name, version in locked.items():
        assert f"# {name} {version}\n" in header
    # The vendored build says which ECharts it is.
    echarts = (vendor.STATIC / "vendor" / "echarts.min.js").read_text(encoding="utf-8")
    assert f'"{locked["echarts"]}"' in echarts


def test_the_county_outlines_are_the_organisations_counties() -> None:
    organisation = load_organisation()
    geo = json.loads((vendor.STATIC / vendor.GEO_FILE).read_text(encoding="utf-8"))
    regions = {f["properties"]["adcode"]: f["properties"]["name"] for f in geo["features"]}
    assert regions == {c.code: c.name for c in organisation.counties.values()}
    assert all(f["geometry"]["type"] in ("Polygon", "MultiPolygon") for f in geo["features"])
    readme = (vendor.STATIC / vendor.GEO_README).read_text(encoding="utf-8")
    assert vendor.GEO_PACKAGE in readme and vendor.locked_versions()[vendor.GEO_PACKAGE] in readme
    assert "MIT" in (vendor.STATIC / "geo" / "LICENSE.txt").read_text(encoding="utf-8")


def test_every_county_has_a_population() -> None:
    counties = load_organisation().counties.values()
    assert all(c.population and c.population > 100_000 for c in counties)
