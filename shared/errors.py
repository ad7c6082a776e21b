"""Errors a person can act on: each names the field, in Chinese or English by Accept-Language."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

# Pydantic error types translated for the zh-CN interface; anything else falls back to a generic line.
_ZH_MESSAGES = {
    "missing": "必填项",
    "string_too_short": "内容过短",
    "string_too_long": "内容过长，最多 {max_length} 个字",
    "string_pattern_mismatch": "格式不正确",
    "literal_error": "取值无效，可选：{expected}",
    "enum": "取值无效，可选：{expected}",
    "datetime_parsing": "时间格式不正确",
    "datetime_from_date_parsing": "时间格式不正确",
    "datetime_type": "时间格式不正确",
    "bool_parsing": "应为是或否",
    "bool_type": "应为是或否",
    "int_parsing": "应为整数",
    "json_invalid": "请求内容不是有效的 JSON",
    "model_attributes_type": "格式不正确",
    "dict_type": "格式不正确",
    "list_type": "应为列表",
    "extra_forbidden": "不允许的字段",
    "too_short": "至少需要 {min_length} 项",
    "too_long": "最多 {max_length} 项",
    "greater_than_equal": "不能小于 {ge}",
    "less_than_equal": "不能大于 {le}",
    "greater_than": "应大于 {gt}",
    "less_than": "应小于 {lt}",
    "int_from_float": "应为整数",
    "int_type": "应为整数",
    "string_type": "应为文字",
    "control_characters": "“{field}”含有不允许的控制字符 U+{code}（第 {position} 个字符），请删除后重新提交",
}


def prefers_english(request: Request) -> bool:
    header = request.headers.get("accept-language", "").lower()
    if not header:
        return False
    first = header.split(",")[0].strip()
    return first.startswith("en")


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts)


def translate(error: dict[str, Any], *, english: bool, field: str = "") -> str:
    message = str(error.get("msg", ""))
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    custom = error.get("ctx", {}).get("error") if isinstance(error.get("ctx"), dict) else None
    if isinstance(custom, LocalisedError):
        return custom.english if english else custom.chinese
    if english:
        return message
    template = _ZH_MESSAGES.get(str(error.get("type")))
    if template is None:
        return message if any("\u4e00" <= ch <= "\u9fff" for ch in message) else "输入无效"
    try:
        return template.format(**{"field": field or "输入", **(error.get("ctx") or {})})
    except (KeyError, IndexError):
        return template.split("{")[0].rstrip("，：,: ")


class LocalisedError(ValueError):
    """A validation failure with its message in both interface languages."""

    def __init__(self, chinese: str, english: str, *, field: str | None = None) -> None:
        super().__init__(english)
        self.chinese = chinese
        self.english = english
        # For checks across fields (a model validator): the field the person should correct.
        self.field = field


def _error_field(error: dict[str, Any]) -> str:
    path = field_path(error.get("loc", ()))
    ctx = error.get("ctx")
    custom = ctx.get("error") if isinstance(ctx, dict) else None
    if isinstance(custom, LocalisedError) and custom.field:
        return f"{path}.{custom.field}" if path else custom.field
    return path


def validation_error_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    english = prefers_english(request)
    errors = []
    for err in exc.errors():
        field = _error_field(err)
        errors.append(
            {"field": field, "message": translate(err, english=english, field=field), "type": err.get("type")}
        )
    return _field_errors_response(422, errors)


def _field_errors_response(status_code: int, errors: list[dict[str, Any]]) -> JSONResponse:
    """One shape for every field error, whether pydantic or a check against stored data found it."""
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse(status_code=status_code, content={"detail": errors, "message": summary})


class FieldProblems(Exception):
    """Checks against stored data failed; answered as 422 with the same shape as validation errors."""

    def __init__(self, problems: list[tuple[str, str, str]], status_code: int = 422) -> None:
        super().__init__("; ".join(f"{f}: {en}" for f, _, en in problems))
        self.problems = problems
        self.status_code = status_code


def conflict(field: str, chinese: str, english: str) -> FieldProblems:
    """A refusal because of the state the object is in (409), in the field-error shape."""
    return FieldProblems([(field, chinese, english)], status_code=409)


def field_problems_response(request: Request, exc: FieldProblems) -> JSONResponse:
    english = prefers_english(request)
    errors = [
        {"field": field, "message": en if english else zh, "type": "value_error"}
        for field, zh, en in exc.problems
    ]
    return _field_errors_response(exc.status_code, errors)


class DomainError(Exception):
    """A refusal raised by domain code; the app maps it to an HTTP answer in one place.

    Domain modules never import FastAPI: they raise one of these subclasses and
    ``shared.app`` turns it into ``{"detail": <Chinese text>}`` with the status below.
    """

    status_code = 400

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class NotFound(DomainError):
    """The object does not exist, or the caller may not know that it does."""

    status_code = 404


class Forbidden(DomainError):
    """The caller is known and may see the object, but may not take this action."""

    status_code = 403


def domain_error_response(request: Request, exc: DomainError) -> JSONResponse:
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)


# What every 422 (and a FieldProblems 409) answers; FastAPI's own HTTPValidationError says
# ``{detail: [{loc, msg, type}]}``, which no answer of these services has ever had.
FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "title": "ValidationError",
    "type": "object",
    "properties": {
        "field": {
            "title": "Field",
            "type": "string",
            "description": "dotted path of the field to correct (empty: the request as a whole)",
        },
        "message": {"title": "Message", "type": "string", "description": "what is wrong, for a person"},
        "type": {"title": "Error Type", "type": "string", "description": "e.g. missing, control_characters"},
    },
    "required": ["field", "message", "type"],
}
FIELD_ERRORS_SCHEMA: dict[str, Any] = {
    "title": "HTTPValidationError",
    "type": "object",
    "properties": {
        "detail": {
            "title": "Detail",
            "type": "array",
            "items": {"$ref": "#/components/schemas/ValidationError"},
        },
        "message": {"title": "Message", "type": "string", "description": "every problem on one line"},
    },
    "required": ["detail", "message"],
}


def declare_field_errors(app: FastAPI) -> None:
    """Make the app's OpenAPI document declare the 422 body the handlers above really send."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        schemas = document.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in schemas:
            schemas["HTTPValidationError"] = FIELD_ERRORS_SCHEMA
            schemas["ValidationError"] = FIELD_ERROR_SCHEMA
        return document

    app.openapi = openapi  # type: ignore[method-assign]
