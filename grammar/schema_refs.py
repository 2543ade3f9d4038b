"""Local ``$ref`` resolution and recursion bookkeeping for the schema translator.

Only references into the same document are followed: ``#``, ``#/json/pointer`` (with ``~0``/``~1``
escapes and percent-encoding), optionally prefixed by the root ``$id``. Anything else (remote documents,
``$anchor`` names, ``$dynamicRef``) is refused by the caller with :class:`UnsupportedSchemaError`.
"""

from __future__ import annotations

from urllib.parse import unquote

from loomlm.grammar.errors import InvalidSchemaError, UnsupportedSchemaError


class RefResolver:
    """Resolves local references and counts how deep each target is currently being expanded."""

    def __init__(self, root: dict | bool, max_recursion_depth: int) -> None:
        self._root = root
        self._max_depth = max_recursion_depth
        self._active: dict[str, int] = {}
        root_id = root.get("$id") if isinstance(root, dict) else None
        self._root_id = root_id.split("#", 1)[0] if isinstance(root_id, str) else None

    def resolve(self, ref: object, pointer: str) -> tuple[str, object]:
        """``(target pointer, target schema)`` of a ``$ref`` found at ``pointer``."""
        if not isinstance(ref, str):
            raise InvalidSchemaError("$ref must be a string", pointer)
        base, hash_, fragment = ref.partition("#")
        if base and base != self._root_id:
            raise UnsupportedSchemaError("$ref", pointer, f"only local references are supported, not {ref!r}")
        if not hash_ and not base:
            raise InvalidSchemaError(f"$ref {ref!r} is empty", pointer)
        fragment = unquote(fragment)
        if fragment and not fragment.startswith("/"):
            raise UnsupportedSchemaError("$ref", pointer, f"anchor references like {ref!r} are not supported")
        node: object = self._root
        for raw in fragment.split("/")[1:]:
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise InvalidSchemaError(f"$ref {ref!r} does not point into the schema", pointer)
        if not isinstance(node, (dict, bool)):
            raise InvalidSchemaError(f"$ref {ref!r} points to a non-schema value", pointer)
        return "#" + fragment, node

    def enter(self, target: str) -> bool:
        """Start expanding ``target``; False (and nothing recorded) when that would recurse too deep."""
        count = self._active.get(target, 0)
        if count > self._max_depth:
            return False
        self._active[target] = count + 1
        return True

    def leave(self, target: str) -> None:
        self._active[target] -= 1
