"""What every new matter is given on receipt: a tracking code and the secret to query it with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.intake.identity import new_query_secret, random_code
from shared.auth import query_secret_hash
from shared.workcalendar import SHANGHAI

# How far ahead of the server's clock a receipt or incident time may be before it is refused.
CLOCK_SKEW = timedelta(minutes=5)


def too_old(
    *, received_at: datetime, now: datetime, max_age: timedelta, label: str
) -> tuple[str, str, str] | None:
    """The problem with a receipt time further back than the configured bound, if it is.

    Every clock counts from the receipt time: one from years ago would be overdue, and would
    fire every reminder and escalation, the moment it was recorded.
    """
    earliest = now - max_age
    if received_at >= earliest:
        return None
    days = max_age.days
    return (
        "received_at",
        f"{label}早于 {days} 天前（{earliest.astimezone(SHANGHAI):%Y年%m月%d日}之前），超出可登记的范围："
        f"各项期限从{label}起算，过早的{label}会使期限一开始就全部超期。"
        "如确为久远的旧案转入，请联系系统管理员调整 RECEIVED_AT_MAX_AGE_DAYS",
        f"received_at is more than {days} days ago (before {earliest:%Y-%m-%d}); "
        "RECEIVED_AT_MAX_AGE_DAYS sets the bound",
    )


@dataclass(frozen=True, slots=True)
class Receipt:
    tracking_code: str
    # Shown once, to the person who filed the matter; only its keyed hash is stored.
    query_secret: str
    query_secret_hash: str


def new_tracking_code(prefix: str, now: datetime) -> str:
    # Upper case by construction, so that a search compares the indexed column as it is stored.
    return f"{prefix}{now.astimezone(SHANGHAI):%y%m%d}{random_code(6)}"


def issue_receipt(*, prefix: str, received_at: datetime, signing_key: str) -> Receipt:
    tracking_code = new_tracking_code(prefix, received_at)
    query_secret = new_query_secret()
    return Receipt(
        tracking_code=tracking_code,
        query_secret=query_secret,
        query_secret_hash=query_secret_hash(
            signing_key=signing_key, tracking_code=tracking_code, query_secret=query_secret
        ),
    )
