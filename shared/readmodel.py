"""An answer's model filled from a stored row: the fields they share by name are copied.

A hand-written ``Read(id=row.id, tracking_code=row.tracking_code, ...)`` repeats every field
twice and misses a field added to both; only what is renamed or computed is written out.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def read_model(model: type[M], row: object, **given: Any) -> M:
    """``model`` from ``row``'s attributes of the same name, with ``given`` for the fields named otherwise.

    Attributes rather than ``row.model_dump()``: a table row's expired or deferred columns load on
    access, and a field the row lacks keeps the model's default (or fails validation if it has none).
    """
    copied = {
        name: getattr(row, name) for name in model.model_fields if name not in given and hasattr(row, name)
    }
    return model(**copied, **given)
