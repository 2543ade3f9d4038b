"""A JSON Schema document walked as data: every subschema location once (local ``#/...`` targets
followed by pointer, so recursive schemas terminate), JSON Pointer resolution and escaping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

SINGLE = ("additionalProperties", "propertyNames", "items", "contains", "not", "if", "then", "else")
SINGLE += ("unevaluatedItems", "unevaluatedProperties", "contentSchema")
MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
LISTS = ("prefixItems", "allOf", "anyOf", "oneOf")


def subschemas(doc: dict) -> Iterator[tuple[str, dict]]:
    """(pointer, schema object) of each subschema location once, local ``#/...`` targets included;
    each is yielded before its children are read, so the consumer may rewrite it."""
    stack: list[tuple[str, Any, str]] = [("", doc, "")]  # (pointer, node, pointer of its $id resource)
    seen: set[str] = set()
    while stack:
        ptr, node, base = stack.pop()
        if ptr in seen or not isinstance(node, dict):
            continue
        seen.add(ptr)
        base = ptr if ptr and "$id" in node else base
        yield ptr, node
        children = [(f"{ptr}/{kw}", node[kw]) for kw in SINGLE if kw in node]
        for kw in MAPS:
            children += [(f"{ptr}/{kw}/{escape(k)}", v) for k, v in (node.get(kw) or {}).items()]
        for kw in LISTS:
            children += [(f"{ptr}/{kw}/{i}", v) for i, v in enumerate(node.get(kw) or [])]
        ref = node.get("$ref")
        if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
            children.append((base + unquote(ref[1:]), resolve(doc, base + unquote(ref[1:]))))
        stack += [(p, child, base) for p, child in reversed(children)]


def resolve(doc: Any, ptr: str) -> Any:
    for token in ptr.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        try:
            doc = doc[int(token)] if isinstance(doc, list) else doc[token]
        except (KeyError, IndexError, ValueError, TypeError):
            return None
    return doc


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")
