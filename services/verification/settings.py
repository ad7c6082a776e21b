from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import ServiceSettings, database_url_field, port_field


class VerificationSettings(ServiceSettings):
    service_name: str = "verification"
    database_url: str = database_url_field("verification")
    port: int = port_field("verification", 8003)
    reminder_working_days_before: int = Field(
        default=3, description="first reminder this many working days before a deadline"
    )
    rebuke_after_working_days: int = Field(
        default=5,
        description="a written rebuke (通报) when a deadline is more than this many working days past",
    )
    ladder_step_hour: int = Field(default=9, description="local hour at which a ladder step of a day fires")
    ladder_interval_seconds: float = Field(
        default=30.0, description="how often the scheduler looks for due steps"
    )
    extension_max_days: int = Field(
        default=30, description="longest extension (延期) a supervisor may approve, in days"
    )
    extension_max_count: int = Field(default=1, description="extensions allowed per clock")
    ledger_min_age_days: int = Field(
        default=30, description="the ledger (台账) lists matters open longer than this"
    )
    evidence_dir: Path = Field(
        default=Path("var/evidence"),
        description="read-only: evidence files kept on disk before the object store, named by SHA-256",
    )
    evidence_max_bytes: int = Field(default=200 * 1024 * 1024, description="largest evidence upload")

    @property
    def upload_limit_bytes(self) -> int:
        # An evidence upload may be as large as its own limit, plus the multipart framing around it.
        return max(self.max_upload_bytes, self.evidence_max_bytes + 1024 * 1024)

    evidence_bucket: str = Field(
        default="supervision-evidence",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="JetStream object store bucket of the evidence files (NATS_REPLICAS replicas)",
    )
    evidence_store_timeout_seconds: float = Field(
        default=10.0, gt=0, description="bound on each evidence store request (a chunk, the metadata)"
    )
    evidence_store_min_bytes_per_second: float = Field(
        default=1024 * 1024,
        gt=0,
        description="a transfer may take EVIDENCE_STORE_TIMEOUT_SECONDS plus its size at this rate",
    )
    reports_schedule_enabled: bool = Field(
        default=True,
        description="make last month's 督察工作通报 (city and each county) on the first working day of a month, "
        "and last year's in January",
    )
    reports_schedule_hour: int = Field(
        default=8, ge=0, le=23, description="local hour from which the first working day's reports are made"
    )
    reports_interval_seconds: float = Field(
        default=300.0, gt=0, description="how often the report scheduler looks for a report that is due"
    )
    report_file: Path | None = Field(
        default=None,
        description="the reports' thresholds and sentence templates (default shared/data/report.json)",
    )
