"""The plan of each matter: who, what, where, and how far its life went, decided before any row.

Every service module reads the same plans, so the four databases tell one story.  Shares are
the generator's assumptions about a five-year-old bureau (rough, documented in the tables
below); counties are weighted by the 2020 census.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from services.routing.rules import Decision, Facts, decide
from shared.events import ClockSet

from .common import CODE_ALPHABET, World, pick

# The seventh national census (2020), resident population in ten thousands: the counties' share
# of complaints.  The city's own units take a share of their own.
COUNTY_POPULATION = {
    "411602": 74.5,  # 川汇区
    "411603": 118.7,  # 淮阳区
    "411621": 61.5,  # 扶沟县
    "411622": 70.1,  # 西华县
    "411623": 92.4,  # 商水县
    "411624": 98.0,  # 沈丘县
    "411625": 101.5,  # 郸城县
    "411627": 113.1,  # 太康县
    "411628": 89.5,  # 鹿邑县
    "411681": 103.6,  # 项城市
}
CITY_UNIT_SHARE = 0.06
CATEGORY_WEIGHTS = {
    "执法不规范": 26,
    "态度粗暴": 22,
    "不作为": 18,
    "乱作为/滥用职权": 8,
    "吃拿卡要": 3,
    "违规查封扣押冻结": 2,
    "逐利执法/插手经济纠纷": 2,
    "刑讯逼供/非法取证": 1,
    "久拖不决": 12,
    "其他违法违纪": 6,
}
OUTCOMES = [
    ("substantiated", 12),
    ("mostly_substantiated", 8),
    ("partly_substantiated", 15),
    ("unsubstantiated", 48),
    ("unverifiable", 14),
    ("no_finding", 3),
]
SUBSTANTIATED = {"substantiated", "mostly_substantiated", "partly_substantiated"}
ACCOUNTABILITY = [
    ("批评教育", 50),
    ("通报批评", 20),
    ("诫勉谈话", 15),
    ("停止执行职务", 5),
    ("禁闭", 3),
    ("党纪政务处分", 6),
    ("移送司法机关", 1),
]
RATINGS = [("satisfied", 70), ("basically_satisfied", 19), ("unsatisfied", 7), (None, 4)]
CHANNELS = [
    ("phone", 62),
    ("web", 12),
    ("wechat", 8),
    ("letter", 3),
    ("visit", 4),
    ("email", 1),
    ("transfer_12345", 7),
    ("transfer_xinfang", 3),
]
CLASSIFICATIONS = [("A", 55), ("B", 30), ("C", 15)]
# Open matters (5 % of all by default): how far past the receipt they were, in days, by the
# ladder step their main clock has reached (13 working days for a complaint).
OPEN_AGES = [((0, 12), 0.2), ((14, 17), 0.2), ((19, 26), 0.2), ((27, 40), 0.2), ((41, 360), 0.2)]
UNITS_BELOW = ["城关派出所", "城郊派出所", "交警大队", "刑警大队", "治安大队", "看守所", "经侦大队"]
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
)
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国红梅志强玉兰海燕"


@dataclass(slots=True)
class Round:
    """One round of handling: an assignment, its task, and what came of it."""

    number: int
    decision: Decision
    assigned_at: datetime
    clocks: list[ClockSet]
    assignment_id: str = ""
    task_id: str = ""
    task_status: str = "open"
    claimed_at: datetime | None = None
    concluded_at: datetime | None = None
    outcome: str | None = None
    accountability: list[str] = field(default_factory=list)
    classification: str | None = None
    answer_id: str = ""
    approved_at: datetime | None = None
    served_at: datetime | None = None
    rating: str | None = None
    rated_at: datetime | None = None
    follow_up_done_at: datetime | None = None
    # A B-class reply (正在解决或列入计划解决): the team's follow-up reply, its approval and rating.
    b_reply_at: datetime | None = None
    b_approved_at: datetime | None = None
    b_rated_at: datetime | None = None

    @property
    def awaiting_b_reply(self) -> bool:
        """The deputy accepted a B-class reply; the follow-up reply is not published yet."""
        return (
            self.classification == "B"
            and self.rating in ("satisfied", "basically_satisfied")
            and self.b_approved_at is None
        )


@dataclass(slots=True)
class Matter:
    id: str
    kind: str  # complaint or suggestion
    tracking_code: str
    secret_hash: str
    received_at: datetime
    county_code: str
    accused_unit: str
    channel: str = "phone"
    anonymous: bool = False
    phone: int = -1
    categories: list[tuple[str, bool]] = field(default_factory=list)
    officers: list[dict[str, Any]] = field(default_factory=list)
    injury: bool = False
    repeat_of: Matter | None = None
    linked_repeat: bool = False
    repeat_after_rejection: bool = False
    facts: list[str] = field(default_factory=list)
    # Suggestions.
    suggestion_kind: str = ""
    session: str = ""
    number: str = ""
    title: str = ""
    deputy: tuple[str, str, str] = ("", "", "")  # account, name, delegation
    lead_unit: str = ""
    co_units: list[str] = field(default_factory=list)
    complex_matter: bool = False
    rounds: list[Round] = field(default_factory=list)
    linked_calls: list[Matter] = field(default_factory=list)
    marked: str | None = None

    @property
    def last(self) -> Round:
        return self.rounds[-1]

    @property
    def is_open(self) -> bool:
        return not self.linked_repeat and self.last.concluded_at is None

    @property
    def text(self) -> str:
        if self.kind == "suggestion":
            return f"建议公安机关就{self.title[2:-3]}加强工作，完善相关措施。"
        names = "、".join(c for c, _ in self.categories)
        return f"我到{self.accused_unit}办事，民警存在{names}的问题，希望督察部门核查处理。"


def tracking_code(prefix: str, received_at: datetime, serial: int, world: World) -> str:
    """Unique by construction: the serial number, scrambled, in the code's six characters."""
    size = len(CODE_ALPHABET) ** 6
    value = (serial * 48271 + world.seed * 7919) % size
    chars = []
    for _ in range(6):
        value, digit = divmod(value, len(CODE_ALPHABET))
        chars.append(CODE_ALPHABET[digit])
    local = received_at.astimezone(world.calendar.tz)
    return f"{prefix}{local:%y%m%d}{''.join(chars)}"


class Planner:
    """Makes matters one batch at a time; remembers what later matters repeat."""

    def __init__(self, world: World, *, phones: int, deputies: list[tuple[str, str, str]]) -> None:
        self.world = world
        self.rng = random.Random(world.seed)
        self.phones = phones
        self.deputies = deputies
        self.serial = 0
        self.numbers: dict[str, int] = {}
        self._decisions: dict[tuple[Any, ...], Decision] = {}
        self._by_phone: dict[int, Matter] = {}
        self._open_pool: list[Matter] = []
        org = world.organisation
        self.counties = list(COUNTY_POPULATION)
        self.county_weights = [COUNTY_POPULATION[c] for c in self.counties]
        self.bureaus = {c.code: c.bureau for c in org.counties.values()}
        self.city_units = list(org.city_units.values())
        self.cats = {c.name: c.serious for c in world.categories.categories}
        self.cat_names = [n for n in CATEGORY_WEIGHTS if n in self.cats]
        self.cat_weights = [CATEGORY_WEIGHTS[n] for n in self.cat_names]

    # ----------------------------------------------------------------------------- routing

    def decision(self, facts: Facts) -> Decision:
        key = (
            facts.case_kind,
            facts.county_code,
            facts.facts,
            facts.lead_unit,
            facts.co_units,
            facts.previous_team_codes,
        )
        found = self._decisions.get(key)
        if found is None:
            found = decide(
                facts=facts, rules=self.world.rules, organisation=self.world.organisation, workload={}
            )
            self._decisions[key] = found
        return found

    def _round(self, matter: Matter, number: int, assigned_at: datetime, previous: tuple[str, ...]) -> Round:
        facts = set(matter.facts) | ({"reopened"} if number > 1 else set())
        decision = self.decision(
            Facts(
                case_kind=matter.kind,
                county_code=matter.county_code,
                accused_unit=matter.accused_unit,
                facts=frozenset(facts),
                previous_team_codes=previous,
                lead_unit=matter.lead_unit or None,
                co_units=tuple(matter.co_units),
            )
        )
        traits = set(facts) | ({"complex"} if matter.complex_matter else set())
        if matter.channel == "transfer_xinfang":
            traits.add("petition")
        clocks = self.world.deadlines.initial_clocks(
            calendar=self.world.calendar,
            case_kind=matter.kind,
            received_at=matter.received_at if number == 1 else assigned_at,
            assigned_at=assigned_at,
            traits=traits,
            named_complainant=not matter.anonymous,
            has_co_units=bool(matter.co_units),
        )
        return Round(number=number, decision=decision, assigned_at=assigned_at, clocks=clocks)

    # ----------------------------------------------------------------------------- matters

    def _new_id(self) -> str:
        return str(UUID(int=self.rng.getrandbits(128), version=4))

    def _identity(self, matter: Matter, secret_prefix: str) -> None:
        self.serial += 1
        matter.tracking_code = tracking_code(secret_prefix, matter.received_at, self.serial, self.world)
        matter.secret_hash = self.world.secret_hash(
            matter.tracking_code, self.world.query_secret(matter.tracking_code)
        )

    def complaint(self, received_at: datetime, *, open_: bool) -> Matter:
        rng = self.rng
        if rng.random() < CITY_UNIT_SHARE:
            county = self.world.organisation.city_code
            unit = rng.choice(self.city_units)
        else:
            county = rng.choices(self.counties, self.county_weights)[0]
            unit = self.bureaus[county] + rng.choice(UNITS_BELOW)
        matter = Matter(
            id=self._new_id(),
            kind="complaint",
            tracking_code="",
            secret_hash="",
            received_at=received_at,
            county_code=county,
            accused_unit=unit,
        )
        matter.channel = pick(rng, CHANNELS)
        matter.anonymous = rng.random() < 0.12
        if not matter.anonymous:
            # A few callers call often: the phone pool is drawn with a skew.
            matter.phone = int(self.phones * rng.random() ** 1.6)
        names = {rng.choices(self.cat_names, self.cat_weights)[0] for _ in range(1 + (rng.random() < 0.15))}
        matter.categories = [(n, self.cats[n]) for n in sorted(names)]
        leadership = rng.random() < 0.02
        if rng.random() < 0.7:
            badge = f"{rng.randrange(10**6):06d}"
            name = ("局长" if leadership else "") or rng.choice(SURNAMES) + "某"
            matter.officers = [{"name": name, "badge_no": badge, "leadership": leadership}]
        matter.injury = rng.random() < 0.01
        self._repeat(matter, open_)
        self._identity(matter, "C")
        matter.facts = self._complaint_facts(matter, leadership)
        return matter

    def _repeat(self, matter: Matter, open_: bool) -> None:
        if matter.phone < 0:
            return
        if open_ and self._open_pool and self.rng.random() < 0.06:
            # A caller ringing again about their open complaint (重复件).
            original = self.rng.choice(self._open_pool)
            matter.phone = original.phone
            self._by_phone[matter.phone] = matter
            matter.accused_unit, matter.county_code = original.accused_unit, original.county_code
            matter.repeat_of, matter.linked_repeat = original, True
            latest = self.world.now - timedelta(hours=1)
            matter.received_at = min(latest, original.received_at + timedelta(days=self.rng.uniform(1, 10)))
            return
        earlier = self._by_phone.get(matter.phone)
        self._by_phone[matter.phone] = matter
        if earlier is None or earlier.kind != "complaint" or self.rng.random() > 0.35:
            return
        matter.accused_unit, matter.county_code = earlier.accused_unit, earlier.county_code
        matter.repeat_of = earlier
        if earlier.rounds and earlier.is_open and open_ and not earlier.linked_repeat:
            matter.linked_repeat = True
            earlier.linked_calls.append(matter)
            # The call comes after the matter it repeats, while that one is still open.
            latest = self.world.now - timedelta(hours=1)
            matter.received_at = min(latest, earlier.received_at + timedelta(days=self.rng.uniform(1, 10)))
        elif earlier.rounds and earlier.last.rating == "unsatisfied":
            matter.repeat_after_rejection = True

    def _complaint_facts(self, matter: Matter, leadership: bool) -> list[str]:
        facts = []
        if leadership:
            facts.append("accused_leadership")
        if any(serious for _, serious in matter.categories):
            facts.append("serious_category")
        if matter.injury:
            facts.append("injury_or_death")
        if matter.repeat_after_rejection:
            facts.append("repeat_after_rejection")
        if matter.county_code == self.world.organisation.city_code:
            facts.append("city_unit")
        if matter.channel == "transfer_xinfang":
            facts.append("petition")
        return facts

    def suggestion(self, received_at: datetime) -> Matter:
        rng = self.rng
        org = self.world.organisation
        kind = "npc_suggestion" if rng.random() < 0.6 else "cppcc_proposal"
        local = received_at.astimezone(self.world.calendar.tz)
        body = "人民代表大会" if kind == "npc_suggestion" else "政协"
        session = f"周口市{body}{local.year}年会议"
        self.numbers[session] = self.numbers.get(session, 0) + 1
        topic = rng.choice(
            ["校园周边交通安全", "农村治安防控", "电信诈骗防范", "户籍办理便民", "夜市治安管理"]
        )
        lead = org.city_bureau if rng.random() < 0.5 else self.bureaus[rng.choice(self.counties)]
        weights = [8] + [1] * (len(self.deputies) - 1)
        matter = Matter(
            id=self._new_id(),
            kind="suggestion",
            tracking_code="",
            secret_hash="",
            received_at=received_at,
            county_code=org.city_code,
            accused_unit="",
            suggestion_kind=kind,
            session=session,
            number=f"{self.numbers[session]:04d}",
            title=f"关于{topic}的建议",
            deputy=rng.choices(self.deputies, weights)[0],
            lead_unit=lead,
            complex_matter=rng.random() < 0.1,
            facts=["suggestion"],
        )
        if rng.random() < 0.2:
            matter.co_units = [self.bureaus[rng.choice(self.counties)]]
            if matter.co_units[0] == lead:
                matter.co_units = []
        self._identity(matter, "S")
        return matter

    # ----------------------------------------------------------------------------- life

    def live(self, matter: Matter, *, open_: bool, now: datetime) -> None:
        """Decide how far the matter went: its rounds, each concluded, answered and rated, or open."""
        if matter.linked_repeat:
            return
        rng = self.rng
        assigned_at = matter.received_at + timedelta(minutes=rng.randint(1, 30))
        previous: tuple[str, ...] = ()
        while True:
            rnd = self._round(matter, len(matter.rounds) + 1, assigned_at, previous)
            matter.rounds.append(rnd)
            rnd.claimed_at = assigned_at + timedelta(hours=rng.uniform(1, 60))
            if open_ and len(matter.rounds) == 1:
                self._open(matter, rnd, now)
                if matter.kind == "complaint" and not matter.anonymous:
                    self._open_pool.append(matter)
                    del self._open_pool[:-5000]
                return
            self._conclude(matter, rnd, now)
            if rnd.rating != "unsatisfied" or len(matter.rounds) == 2 or matter.kind == "suggestion":
                return
            previous = (*previous, rnd.decision.team_code)
            assert rnd.rated_at is not None  # a rating was given
            assigned_at = rnd.rated_at + timedelta(minutes=5)

    def _open(self, matter: Matter, rnd: Round, now: datetime) -> None:
        rng = self.rng
        if (rnd.claimed_at is not None and rnd.claimed_at > now) or rng.random() < 0.2:
            rnd.claimed_at = None
            rnd.task_status = "open"
            return
        rnd.task_status = "in_review" if rnd.decision.review_required and rng.random() < 0.3 else "claimed"
        if rnd.task_status == "in_review":
            rnd.outcome = pick(rng, OUTCOMES[:-1])
        age = (now - matter.received_at).days
        if age > 40 and rng.random() < 0.35:
            matter.marked = "leader_assigned" if rng.random() < 0.15 else "supervised"

    def _conclude(self, matter: Matter, rnd: Round, now: datetime) -> None:
        rng = self.rng
        main = next((c for c in rnd.clocks if c.name in ("verification", "deputy_reply")), rnd.clocks[-1])
        span = (main.due_at - rnd.assigned_at).total_seconds()
        # Nine in ten on time; the rest up to twenty days late.
        late = rng.random() < 0.1
        offset = span * rng.uniform(0.3, 0.98) if not late else span + rng.uniform(0.5, 20) * 86400
        rnd.concluded_at = min(rnd.assigned_at + timedelta(seconds=offset), now - timedelta(hours=2))
        if rnd.claimed_at is None or rnd.claimed_at >= rnd.concluded_at:
            rnd.claimed_at = rnd.assigned_at + (rnd.concluded_at - rnd.assigned_at) / 3
        rnd.task_status = "concluded"
        if matter.kind == "suggestion":
            rnd.outcome = "substantiated"
            rnd.classification = pick(rng, CLASSIFICATIONS)
        else:
            rnd.outcome = pick(rng, OUTCOMES)
            if rnd.outcome in SUBSTANTIATED and rng.random() < 0.45:
                rnd.accountability = [pick(rng, ACCOUNTABILITY)]
        approval = rnd.concluded_at + timedelta(hours=rng.uniform(2, 40))
        if approval > now:
            return  # the answer waits for a supervisor's approval
        rnd.approved_at = approval
        rnd.served_at = approval + timedelta(minutes=rng.randint(1, 30))
        follow_up = rnd.served_at + timedelta(hours=rng.uniform(4, 30))
        if follow_up > now:
            return
        rnd.follow_up_done_at = follow_up
        rnd.rating = pick(rng, RATINGS)
        if rnd.rating is not None:
            rnd.rated_at = follow_up
        if rnd.classification == "B" and rnd.rating in ("satisfied", "basically_satisfied"):
            self._b_reply(rnd, now)

    def _b_reply(self, rnd: Round, now: datetime) -> None:
        """The follow-up reply of a B-class suggestion: within the three months, one in ten late."""
        assert rnd.concluded_at is not None
        days = self.rng.uniform(30, 88) if self.rng.random() < 0.9 else self.rng.uniform(95, 120)
        reply = rnd.concluded_at + timedelta(days=days)
        if reply > now:
            return
        rnd.b_reply_at = reply
        if reply + timedelta(days=2) < now:
            rnd.b_approved_at = reply + timedelta(days=1)
            if reply + timedelta(days=4) < now:
                rnd.b_rated_at = reply + timedelta(days=3)


def open_received_at(rng: random.Random, now: datetime) -> datetime:
    low, high = rng.choices([r for r, _ in OPEN_AGES], [w for _, w in OPEN_AGES])[0]
    return now - timedelta(days=rng.uniform(low, high), minutes=rng.randint(0, 600))
