"""Typed options and results of the JSON Schema translator (re-exported by ``json_schema``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The grammar compiler's default limit (``CompilerConfig.max_regex_len``): a regex the translator lets
# through is never refused by the compiler for its length.
DEFAULT_MAX_REGEX_LEN = 200_000
DEFAULT_MAX_SCHEMA_NODES = 100_000  # jsonschema's meta-schema check alone takes ~7 s at this size


@dataclass(frozen=True, slots=True)
class SchemaOptions:
    """How a JSON Schema becomes a regex.

    ``strict``: refuse (``UnsupportedSchemaError``) any keyword that cannot be enforced; with False such
    keywords are dropped, listed in ``SchemaRegex.dropped``, and the caller must validate the result.
    ``whitespace``: "compact" (no whitespace at all) or "pretty" (exactly ``json.dumps(indent=indent)``).
    ``max_recursion_depth``: a recursive ``$ref`` is unrolled this many times; past that the recursive
    branch is not offered (an optional property is left out, an anyOf branch disappears ...).
    ``max_regex_len``: the size budget of the regex, checked as it grows (counted repetitions weigh
    their copies, see ``schema_budget``); past it ``GrammarTooLargeError`` names the JSON Pointer.
    ``max_schema_nodes``: a larger schema document is refused before translation.
    """

    strict: bool = True
    whitespace: Literal["compact", "pretty"] = "compact"
    indent: int = 2
    max_recursion_depth: int = 3
    max_regex_len: int = DEFAULT_MAX_REGEX_LEN
    max_schema_nodes: int = DEFAULT_MAX_SCHEMA_NODES

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
        for name in ("max_regex_len", "max_schema_nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


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
