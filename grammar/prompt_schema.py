"""The parameters schema as a model reads it in a prompt: local ``$ref``s inlined (a small model
cannot follow ``#/$defs/Unit`` to see that ``unit`` is ``"celsius"`` or ``"fahrenheit"``) and
``$defs`` dropped when nothing refers to them any more. Only the prompt changes: the grammar and
validation keep the full schema. Recursive references stay references, and a schema whose inlined
form would grow past a node budget (references fanning out) is shown as it is."""

from __future__ import annotations

from typing import Any

from loomlm.grammar.schema_walk import resolve

_MAX_NODES = 2000  # inlined dicts and lists, all told


class _TooLarge(Exception):
    pass


def prompt_schema(schema: dict) -> dict:
    """``schema`` with its local references inlined where they are not recursive (a new dict;
    ``schema`` itself unchanged)."""
    budget = [_MAX_NODES]
    try:
        inlined = _inline(schema, schema, (), budget)
    except _TooLarge:
        return schema
    if isinstance(inlined, dict) and "$defs" in inlined and not _has_ref(inlined, skip="$defs"):
        inlined = {key: value for key, value in inlined.items() if key != "$defs"}
    return inlined


def _inline(node: Any, root: dict, stack: tuple[str, ...], budget: list[int]) -> Any:
    if not isinstance(node, dict | list):
        return node
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge
    if isinstance(node, list):
        return [_inline(item, root, stack, budget) for item in node]
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and ref not in stack:
        target = resolve(root, ref[1:])
        if isinstance(target, dict):
            siblings = {k: _inline(v, root, stack, budget) for k, v in node.items() if k != "$ref"}
            return {**_inline(target, root, (*stack, ref), budget), **siblings}
    # $defs is kept as written: it is dropped at the top when nothing refers to it any more
    return {k: v if k == "$defs" else _inline(v, root, stack, budget) for k, v in node.items()}


def _has_ref(node: Any, skip: str) -> bool:
    if isinstance(node, list):
        return any(_has_ref(item, skip) for item in node)
    if isinstance(node, dict):
        return "$ref" in node or any(_has_ref(v, skip) for k, v in node.items() if k != skip)
    return False
