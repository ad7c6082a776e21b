"""Reference data every service reads: the organisation seed and the complaint categories.

The files under ``shared/data`` are defaults; a bureau points ``UNITS_FILE`` or
``CATEGORIES_FILE`` at its own copy.  Routing owns the live, editable copy of
the organisation in its database; the others use this for validation only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_UNITS_FILE = DATA_DIR / "units.json"
DEFAULT_CATEGORIES_FILE = DATA_DIR / "categories.json"
DEFAULT_IDENTITY_PURPOSES_FILE = DATA_DIR / "identity_purposes.json"


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    serious: bool
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class County:
    code: str
    name: str
    bureau: str
    inspection_team: str
    aliases: tuple[str, ...] = ()
    # Resident population (2020 census): the denominator of complaints per 10,000 residents.
    population: int | None = None


@dataclass(frozen=True)
class Organisation:
    city_code: str
    city_name: str
    city_bureau: str
    city_team_code: str
    city_team_name: str
    city_units: dict[str, str]
    counties: dict[str, County]
    unit_kinds: tuple[str, ...] = field(default_factory=tuple)

    def county_of_unit(self, unit_name: str) -> County | None:
        """The county whose bureau the named unit belongs to, judged by its name."""
        for county in self.counties.values():
            names = (county.bureau, county.inspection_team, *county.aliases)
            if any(unit_name.startswith(name) or name in unit_name for name in names):
                return county
        return None

    def is_known_area(self, code: str) -> bool:
        return code == self.city_code or code in self.counties

    def area_name(self, code: str) -> str:
        if code == self.city_code:
            return self.city_name
        county = self.counties.get(code)
        return county.name if county else code

    def team_codes(self) -> list[str]:
        return [self.city_team_code, *self.counties]

    def team_name(self, code: str) -> str:
        if code == self.city_team_code:
            return self.city_team_name
        county = self.counties.get(code)
        return county.inspection_team if county else code


@dataclass(frozen=True)
class CategoryBook:
    categories: tuple[Category, ...]
    injury_or_death_words: tuple[str, ...]
    leadership_titles: tuple[str, ...]

    def find(self, name: str) -> Category | None:
        wanted = name.strip()
        for category in self.categories:
            if wanted in (category.name, category.code, *category.aliases):
                return category
        return None

    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    def mentions_injury_or_death(self, text: str) -> bool:
        return any(word in text for word in self.injury_or_death_words)

    def is_leadership_title(self, text: str | None) -> bool:
        return bool(text) and any(title in (text or "") for title in self.leadership_titles)


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def parse_organisation(data: dict[str, object]) -> Organisation:
    city = data["city"]
    assert isinstance(city, dict)
    team = city["inspection_team"]
    counties = data["counties"]
    assert isinstance(counties, list)
    return Organisation(
        city_code=city["code"],
        city_name=city["name"],
        city_bureau=city["bureau"],
        city_team_code=team["code"],
        city_team_name=team["name"],
        city_units={u["code"]: u["name"] for u in city.get("city_units", [])},
        counties={
            c["code"]: County(
                code=c["code"],
                name=c["name"],
                bureau=c["bureau"],
                inspection_team=c["inspection_team"],
                aliases=tuple(c.get("aliases", [])),
                population=int(c["population"]) if c.get("population") is not None else None,
            )
            for c in counties
        },
        unit_kinds=tuple(str(k) for k in _as_list(data.get("unit_kinds_below_a_county_bureau"))),
    )


@lru_cache(maxsize=8)
def load_organisation(path: Path = DEFAULT_UNITS_FILE) -> Organisation:
    return parse_organisation(json.loads(Path(path).read_text(encoding="utf-8")))


@lru_cache(maxsize=8)
def load_categories(path: Path = DEFAULT_CATEGORIES_FILE) -> CategoryBook:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return CategoryBook(
        categories=tuple(
            Category(
                code=c["code"],
                name=c["name"],
                serious=bool(c["serious"]),
                aliases=tuple(c.get("aliases", [])),
            )
            for c in data["categories"]
        ),
        injury_or_death_words=tuple(data.get("injury_or_death_words", [])),
        leadership_titles=tuple(data.get("leadership_titles", [])),
    )


def load_identity_purposes(path: Path = DEFAULT_IDENTITY_PURPOSES_FILE) -> tuple[str, ...]:
    """The purposes a complainant's identity may be read for, in the order a page offers them."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    purposes = tuple(str(p).strip() for p in _as_list(data.get("purposes")) if str(p).strip())
    if not purposes or len(set(purposes)) != len(purposes):
        raise ValueError(f"{path}: 'purposes' must be a non-empty list without repeats")
    return purposes
