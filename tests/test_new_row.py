"""``new_row`` builds the same row as the model's constructor, and the row is written the same."""

from __future__ import annotations

import importlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects.sqlite import DATETIME
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlmodel import SQLModel, select

from services.verification.models import MatterSnapshot, Task, TaskClock
from shared.db import UTCDateTime, _copier, create_engine, create_session_factory, new_row, table_of, utcnow

# Every table model is checked, so that a field added later with a default the shortcut does not
# handle fails here rather than in a consumer.
MODEL_MODULES = (
    "services.intake.models",
    "services.routing.models",
    "services.verification.models",
    "services.feedback.models",
    "shared.audit",
    "shared.outbox",
    "shared.inbox",
)


def fields_of(row: SQLModel) -> dict[str, object]:
    return {name: getattr(row, name) for name in type(row).model_fields}


def test_a_new_row_has_the_constructors_values_and_defaults() -> None:
    values = {
        "case_id": "case-1",
        "case_kind": "complaint",
        "assignment_id": "a-1",
        "team_code": "T1",
        "team_name": "川汇区公安分局督察大队",
        "assignment_kind": "ordinary",
    }
    built, constructed = new_row(Task, **values), Task(**values)
    built_fields, constructed_fields = fields_of(built), fields_of(constructed)
    # Generated per row, so they differ; everything else is the same.
    for generated in ("id", "created_at", "updated_at"):
        built_fields.pop(generated, None)
        constructed_fields.pop(generated, None)
    assert built_fields == constructed_fields
    assert built.id and built.id != constructed.id
    assert built.model_fields_set == constructed.model_fields_set == set(values)


def test_mutable_defaults_are_not_shared_between_rows() -> None:
    first = new_row(
        Task, case_id="c1", case_kind="complaint", assignment_id="a", team_code="T", team_name="t"
    )
    second = new_row(
        Task, case_id="c2", case_kind="complaint", assignment_id="a", team_code="T", team_name="t"
    )
    first.participants.append("T9")
    assert second.participants == []


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError, match="no field 'case'"):
        new_row(MatterSnapshot, case="c1")


async def test_rows_built_so_are_inserted_and_read_back(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'rows.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all, tables=[table_of(Task), table_of(TaskClock)])
    sessions = create_session_factory(engine)
    try:
        due = utcnow()
        async with sessions() as session, session.begin():
            task = new_row(
                Task,
                case_id="c1",
                case_kind="complaint",
                assignment_id="a1",
                team_code="T1",
                team_name="一队",
                assignment_kind="ordinary",
            )
            session.add(task)
            # The clock refers to the task: the flush must still write the task first.
            clock = new_row(
                TaskClock,
                task_id=task.id,
                case_id="c1",
                team_code="T1",
                name="verification",
                label="核查",
                rule="30 个工作日",
                source="规定",
                due_at=due,
                original_due_at=due,
            )
            session.add(clock)
            clock.label = "核查期限"  # a row built so tracks later changes like any other
        async with sessions() as session:
            stored_task = (await session.exec(select(Task))).one()
            stored_clock = (await session.exec(select(TaskClock))).one()
        assert stored_task.id == task.id and stored_task.team_name == "一队"
        assert stored_clock.task_id == task.id and stored_clock.label == "核查期限"
        assert stored_clock.due_at == due
    finally:
        await engine.dispose()


def test_a_row_can_be_read_before_anything_configured_the_mappers() -> None:
    # A fresh interpreter: nothing has queried or constructed a row yet.
    script = (
        "from shared.db import new_row\n"
        "from shared.idempotency import IdempotencyRecord\n"
        "row = new_row(IdempotencyRecord, key='k1', username='u')\n"
        "print(row.key, row.username)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["k1", "u"]


def test_sqlite_stores_times_as_sqlalchemy_always_has() -> None:
    # Rows written before UTCDateTime formatted the text itself must compare and sort with new
    # ones: the text has to be exactly what SQLAlchemy's own SQLite DATETIME writes.
    dialect = SQLiteDialect()
    ours = UTCDateTime().bind_processor(dialect)
    theirs = DATETIME().bind_processor(dialect)
    assert ours is not None and theirs is not None
    shanghai = timezone(timedelta(hours=8))
    for moment in (
        datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 28, 6, 20, 13, 166325, tzinfo=UTC),
        datetime(2027, 2, 1, 7, 59, 59, 1, tzinfo=shanghai),
        datetime(999, 12, 31, 23, 0, tzinfo=UTC),
        # UTC under another object (pydantic's, a parsed "Z"): the conversion path, same text.
        datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=timezone(timedelta(0), "Z")),
    ):
        assert ours(moment) == theirs(moment.astimezone(UTC).replace(tzinfo=None))
    assert ours(None) is None
    with pytest.raises(ValueError):
        ours(datetime(2026, 1, 1))


def table_models() -> list[type[Any]]:
    for module in MODEL_MODULES:
        importlib.import_module(module)
    return sorted(
        (
            mapper.class_
            for mapper in SQLModel._sa_registry.mappers
            if mapper.class_.__module__ in MODEL_MODULES
        ),
        key=lambda model: (model.__module__, model.__name__),
    )


@pytest.mark.parametrize("model", table_models(), ids=lambda model: model.__name__)
def test_a_new_row_holds_the_defaults_the_constructor_gives(model: type[Any]) -> None:
    built, first, second = model(), new_row(model), new_row(model)
    for name, field in model.model_fields.items():
        if field.is_required():
            continue
        if field.default_factory is None:
            assert getattr(first, name) == getattr(built, name), name
            continue
        assert type(getattr(first, name)) is type(getattr(built, name)), name
        if isinstance(getattr(first, name), list | dict | set):
            assert getattr(first, name) is not getattr(second, name), name


def test_only_a_mutable_default_is_copied_for_each_row() -> None:
    shared_default = ["411681"]
    make = _copier(shared_default, None)
    assert make is not None
    copied = make()
    assert copied == shared_default and copied is not shared_default
    assert _copier("open", None) is None and _copier(None, None) is None and _copier(0, None) is None
    assert _copier(None, list) is list
