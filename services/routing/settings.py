from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import FeedbackCalledSettings, database_url_field, port_field


class RoutingSettings(FeedbackCalledSettings):
    service_name: str = "routing"
    database_url: str = database_url_field("routing")
    port: int = port_field("routing", 8002)
    rules_file: Path | None = Field(
        default=None, description="routing rules seed; default: the bundled rules"
    )
    max_returns_before_supervisor: int = Field(
        default=2, description="after this many returns (退回) a supervisor decides"
    )
