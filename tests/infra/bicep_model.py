"""Offline reading of infra/*.bicep with pycep-parser (no Bicep CLI or Azure needed).

pycep turns a file into nested dicts; `evaluate` resolves the small expression subset our templates
use (identifiers, property access, union()) against a given environment, enough to check what a
resource would be deployed with. pycep writes identifiers and plain strings the same way, so a bare
string is looked up in the environment first and taken literally otherwise.
"""
from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
_INTERPOLATION = re.compile(r"\$\{(\w+)\}")


@cache
def parse(relative: str) -> dict[str, Any]:
    path = INFRA / relative
    if not path.is_file():
        raise FileNotFoundError(f"no Bicep file {path}")
    return BicepParser().parse(file_path=path)


def bicep_files() -> list[str]:
    return sorted(str(p.relative_to(INFRA)) for p in INFRA.rglob("*.bicep"))


def queue_spec() -> dict[str, Any]:
    return json.loads((ROOT / "schemas" / "queues.json").read_text())


def resource(relative: str, symbol: str) -> dict[str, Any]:
    resources = parse(relative).get("resources", {})
    if symbol not in resources:
        raise KeyError(f"{relative} declares no resource {symbol!r} (has {sorted(resources)})")
    return resources[symbol]


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource/module, looking through a `[for ...]` or `if` wrapper."""
    config = declaration["config"]
    return config["config"] if "loop_type" in config or "condition" in config else config


def loop(declaration: dict[str, Any]) -> tuple[str, Any] | None:
    config = declaration["config"]
    if "loop_type" not in config:
        return None
    detail = config["loop_type"]["detail"]
    return detail["item_name"], detail["array_name"]


def evaluate(node: Any, env: dict[str, Any]) -> Any:
    """Resolve `node` against env; names env lacks stay symbolic ("namespace.id")."""
    if isinstance(node, str):
        if node in env:
            return env[node]
        return _INTERPOLATION.sub(lambda m: str(env.get(m.group(1), m.group(0))), node)
    if isinstance(node, list):
        return [evaluate(item, env) for item in node]
    if isinstance(node, dict) and isinstance(node.get("operator"), dict):  # not an object's "operator" key
        op = node["operator"]
        operands = op["operands"]
        if op["type"] == "property_accessor":
            target = evaluate(operands["operand_1"], env)
            return _access(target, operands["operand_2"], env)
        if op["type"] == "index_accessor":
            return evaluate(operands["operand_1"], env)[evaluate(operands["operand_2"], env)]
        if op["type"] == "not":
            return not evaluate(operands["bool_value"], env)
        if op["type"] == "and":
            return bool(evaluate(operands["operand_1"], env)) and bool(evaluate(operands["operand_2"], env))
        if op["type"] == "or":
            return bool(evaluate(operands["operand_1"], env)) or bool(evaluate(operands["operand_2"], env))
        if op["type"] == "conditional":
            chosen = "true_value" if evaluate(operands["condition"], env) else "false_value"
            return evaluate(operands[chosen], env)
        raise NotImplementedError(f"operator {op['type']}")
    if isinstance(node, dict) and isinstance(node.get("function"), dict):
        fn = node["function"]
        args = [evaluate(v, env) for v in fn.get("parameters", {}).values()]
        if fn["type"] == "union":
            merged: dict[str, Any] = {}
            for arg in args:
                merged.update(arg)
            return merged
        if fn["type"] == "empty":
            return len(args[0]) == 0
        if fn["type"] == "string":
            return json.dumps(args[0]) if isinstance(args[0], (dict, list, bool)) else str(args[0])
        raise NotImplementedError(f"function {fn['type']}")
    if isinstance(node, dict):
        return {k: evaluate(v, env) for k, v in node.items()}
    return node


def _access(target: Any, accessor: Any, env: dict[str, Any]) -> Any:
    if isinstance(accessor, str):
        return f"{target}.{accessor}" if isinstance(target, str) else target[accessor]
    op = accessor["operator"]  # a.b.c arrives as a -> (b -> c)
    inner = _access(target, op["operands"]["operand_1"], env)
    return _access(inner, op["operands"]["operand_2"], env)


def depends_on(relative: str, symbol: str) -> list[str]:
    """The symbols a resource lists in dependsOn (explicitly; `parent` is separate)."""
    return list(body(resource(relative, symbol)).get("dependsOn", []))


def accessor_path(node: Any) -> list[str]:
    """`a.b.c` as ["a", "b", "c"] (for checking wiring without evaluating)."""
    if isinstance(node, str):
        return [node]
    op = node["operator"]
    if op["type"] != "property_accessor":
        raise ValueError(f"not a property access: {node}")
    return accessor_path(op["operands"]["operand_1"]) + accessor_path(op["operands"]["operand_2"])
