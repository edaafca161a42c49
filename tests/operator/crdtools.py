"""Offline stand-ins for what the API server does with the CRD: structural defaulting, the openAPIV3Schema
(jsonschema) and the x-kubernetes-validations CEL rules (cel-python)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema

_CEL = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Structural defaulting as the API server does it: missing properties with a `default` get it, then
    defaults apply inside (also inside the defaults themselves)."""
    obj = copy.deepcopy(obj)
    if isinstance(obj, dict) and schema.get("type") == "object":
        for key, sub in (schema.get("properties") or {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = apply_defaults(sub, obj[key])
    elif isinstance(obj, list) and "items" in schema:
        obj = [apply_defaults(schema["items"], x) for x in obj]
    return obj


def _to_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """openAPIV3Schema → JSON Schema: drop the x-kubernetes-* keys, close objects that list properties
    (the API server prunes unknown fields; here they are errors), keep preserve-unknown-fields open."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {k: _to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _to_jsonschema(value)
        elif key == "format" and value in ("int32", "int64"):
            continue
        else:
            out[key] = value
    if (
        node.get("type") == "object"
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in node
    ):
        out["additionalProperties"] = False
    return out


def schema_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    js = _to_jsonschema(schema)
    js["properties"]["metadata"] = {"type": "object"}
    validator = jsonschema.Draft7Validator(js)
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]


def cel_rules(schema: dict[str, Any], obj: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(path, rule, value of self) for every rule whose node is present in `obj`."""
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path, rule, obj
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in obj:
                yield from cel_rules(sub, obj[key], f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        for i, x in enumerate(obj):
            yield from cel_rules(schema["items"], x, f"{path}[{i}]")


def cel_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules that `obj` (already defaulted) breaks."""
    errors = []
    for path, rule, value in cel_rules(schema, obj):
        program = _PROGRAMS.get(rule["rule"])
        if program is None:
            program = _PROGRAMS[rule["rule"]] = _CEL.program(_CEL.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception) or not bool(result):
            errors.append(f"{path or '<root>'}: {rule['message']}")
    return errors


def admit(schema: dict[str, Any], obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What `kubectl apply` of a custom resource would face: defaults, then schema, then CEL."""
    defaulted = apply_defaults(schema, obj)
    errors = schema_errors(schema, defaulted)
    if not errors:
        errors = cel_errors(schema, defaulted)
    return defaulted, errors
