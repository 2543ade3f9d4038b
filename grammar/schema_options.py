"""Typed options and results of the JSON Schema translator (re-exported by ``json_schema``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class SchemaOptions:
    """How a JSON Schema becomes a regex.

    ``strict``: refuse (``UnsupportedSchemaError``) any keyword that cannot be enforced; with False such
    keywords are dropped, listed in ``SchemaRegex.dropped``, and the caller must validate the result.
    ``whitespace``: "compact" (no whitespace at all) or "pretty" (exactly ``json.dumps(indent=indent)``).
    ``max_recursion_depth``: a recursive ``$ref`` is unrolled this many times; past that the recursive
    branch is not offered (an optional property is left out, an anyOf branch disappears ...).
    """

    strict: bool = True
    whitespace: Literal["compact", "pretty"] = "compact"
    indent: int = 2
    max_recursion_depth: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.strict, bool):
            raise ValueError(f"strict must be a bool, got {self.strict!r}")
        if self.whitespace not in ("compact", "pretty"):
            raise ValueError(f"whitespace must be 'compact' or 'pretty', got {self.whitespace!r}")
        if isinstance(self.indent, bool) or not isinstance(self.indent, int) or not 0 <= self.indent <= 16:
            raise ValueError(f"indent must be an int in [0, 16], got {self.indent!r}")
        depth = self.max_recursion_depth
        if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= 16:
            raise ValueError(
                f"max_recursion_depth must be an int in [0, 16] (regex size grows with it), got {depth!r}"
            )


@dataclass(frozen=True, slots=True)
class DroppedKeyword:
    """A keyword that ``strict=False`` left out of the regex: the result must be validated afterwards."""

    keyword: str
    pointer: str
    reason: str


@dataclass(frozen=True, slots=True)
class SchemaRegex:
    regex: str
    dropped: tuple[DroppedKeyword, ...]
