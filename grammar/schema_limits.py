"""Limits on a JSON Schema document, checked before anything reads it recursively.

jsonschema's meta-schema check, ``json.dumps`` and the translator all recurse over the document;
Python's re recurses over a pattern's groups. :func:`check_schema_limits` walks the document without
recursion and refuses (``GrammarTooLargeError``) one that is too big or nests too deep, in time
proportional to the limit, not to the document.
"""

from __future__ import annotations

import re

from loomlm.grammar.errors import GrammarTooLargeError
from loomlm.grammar.schema_budget import NESTING_ADVICE

# Nesting of objects/arrays in the schema document. jsonschema's meta-schema check needs ~8 Python
# frames per level (it failed at 123 levels from an empty stack under the default limit of 1000).
MAX_SCHEMA_DEPTH = 64
# Nesting of groups in a pattern: Python's re (in jsonschema's check) and the pattern parser recurse.
MAX_PATTERN_NESTING = 64
# A string counts one schema node more per this many characters (so one huge string is not "1 node").
STRING_CHARS_PER_NODE = 100
_PATTERN_TOKEN = re.compile(r"\\.|\[(?:\\.|[^\]\\])*\]|[()]", re.DOTALL)


def check_schema_limits(schema: object, max_nodes: int) -> None:
    """Refuse a schema document before anything recursive reads it: more than ``max_nodes`` nodes
    (each object, array, key and scalar; strings one more per ``STRING_CHARS_PER_NODE`` characters),
    nesting deeper than ``MAX_SCHEMA_DEPTH``, or a pattern nesting groups past
    ``MAX_PATTERN_NESTING``. Iterative; a container's children are counted before they are visited,
    so the walk stops as soon as a limit is passed."""
    nodes = 1 + _string_cost(schema)
    _check_nodes(nodes, max_nodes, "")
    stack: list[tuple[object, str, int]] = [(schema, "", 0)]
    while stack:
        node, pointer, depth = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        if depth >= MAX_SCHEMA_DEPTH:
            raise GrammarTooLargeError(
                "the JSON Schema's nesting depth", depth + 1, MAX_SCHEMA_DEPTH, pointer, NESTING_ADVICE
            )
        nodes += len(node) * (2 if isinstance(node, dict) else 1)
        _check_nodes(nodes, max_nodes, pointer)
        if isinstance(node, list):
            nodes += sum(map(_string_cost, node))
            _check_nodes(nodes, max_nodes, pointer)
            stack.extend((item, f"{pointer}/{index}", depth + 1) for index, item in enumerate(node))
            continue
        for key, value in node.items():
            token = str(key).replace("~", "~0").replace("/", "~1")
            nodes += _string_cost(token) + _string_cost(value)
            _check_nodes(nodes, max_nodes, f"{pointer}/{token}")
            if key == "pattern" and isinstance(value, str):
                _check_pattern(value, f"{pointer}/{token}")
            if key == "patternProperties" and isinstance(value, dict):
                for name in value:
                    _check_pattern(str(name), f"{pointer}/{token}")
            stack.append((value, f"{pointer}/{token}", depth + 1))


def _string_cost(value: object) -> int:
    """The nodes a string counts beyond its own (counted with its container)."""
    return len(value) // STRING_CHARS_PER_NODE if isinstance(value, str) else 0


def _check_nodes(nodes: int, max_nodes: int, pointer: str) -> None:
    if nodes > max_nodes:
        raise GrammarTooLargeError(
            "the JSON Schema's size in nodes (objects, arrays, keys, values)",
            nodes,
            max_nodes,
            pointer,
            "it was refused before translation: send a smaller schema (drop unused $defs, long "
            "descriptions and examples) or raise max_schema_nodes",
        )


def _check_pattern(pattern: str, pointer: str) -> None:
    depth = deepest = 0
    for token in _PATTERN_TOKEN.finditer(pattern):
        if token[0] == "(":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_PATTERN_NESTING:
                break
        elif token[0] == ")":
            depth -= 1
    if deepest > MAX_PATTERN_NESTING:
        raise GrammarTooLargeError(
            "the pattern's group nesting", deepest, MAX_PATTERN_NESTING, pointer, "simplify the pattern"
        )
