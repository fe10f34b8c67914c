"""The case format v1 contract (``xmargin.schema``): one schema, checked the same everywhere.

Pure pydantic (no numpy), so the client-only install validates with it too. The JSON Schema it
exports ships beside it as ``case-v1.schema.json`` (``python -m xmargin.schema`` rewrites it).
"""

from __future__ import annotations

from .case_v1 import (
    BOUNDS,
    CASE_FORMAT,
    DATE_PATTERN,
    FICC_ACCOUNT_TYPES,
    MAX_ECHO,
    CaseBody,
    CaseV1,
    ScenarioSetDoc,
    SchemaError,
    Violation,
    body_in_columns,
    check,
    clip,
    json_schema,
    parse_json,
    rows_as_columns,
    schema_path,
    validate_body,
    validate_case,
    validated_columns,
    violations_of,
)

__all__ = [
    "BOUNDS",
    "CASE_FORMAT",
    "DATE_PATTERN",
    "FICC_ACCOUNT_TYPES",
    "MAX_ECHO",
    "CaseBody",
    "CaseV1",
    "ScenarioSetDoc",
    "SchemaError",
    "Violation",
    "body_in_columns",
    "check",
    "clip",
    "json_schema",
    "parse_json",
    "rows_as_columns",
    "schema_path",
    "validate_body",
    "validate_case",
    "validated_columns",
    "violations_of",
]
