"""Structural tags: free text, and wherever the model writes a tag's ``begin`` string, one JSON
value under that tag's schema followed by its ``end`` string (the building block of tool calls:
``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` inside an answer).

``StructuralTags(tags, min_tags=, max_tags=)`` compiles to one llguidance Lark grammar: the text
before a tag is one lazy lexeme ended by the tag's trigger, so the model writes freely until it
starts a tag and is constrained from there on. ``min_tags`` / ``max_tags`` bound how many tags the
output holds in the grammar itself (``tool_choice="required"``, ``parallel_tool_calls=False``), never
by cutting the output afterwards. Each tag's schema goes through the same exact-or-refused
preparation as a response format (``llg_schema``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from loomlm.grammar.errors import GrammarError
from loomlm.grammar.llg_schema import prepare_llg_schema

_MAX_TAGS_BOUND = 64  # max_tags is unrolled in the grammar
_FORMATS = Draft202012Validator.FORMAT_CHECKER


def _json_schema(schema: Any) -> dict | bool:
    """A tag's schema as a JSON Schema: a dict or bool as given, else the type's (Pydantic)."""
    if isinstance(schema, dict | bool):
        return schema
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(schema).json_schema()
    except Exception as error:  # pydantic raises several kinds for a type it cannot describe
        raise GrammarError(f"cannot derive a JSON Schema from {schema!r}: {error}") from None


@dataclass(frozen=True, slots=True)
class StructuralTag:
    """``begin`` JSON-value-under-``schema`` ``end``. ``trigger`` (a prefix of ``begin``; default
    all of it) is the text that starts the constrained part."""

    begin: str
    schema: Any
    end: str = ""
    trigger: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.begin, str) or not self.begin:
            raise GrammarError("a structural tag needs a non-empty begin string")
        trigger = self.trigger if self.trigger is not None else self.begin
        if not trigger or not self.begin.startswith(trigger):
            raise GrammarError(f"the trigger {trigger!r} must be a non-empty prefix of begin {self.begin!r}")


@dataclass(frozen=True, slots=True)
class TaggedValue:
    """One tag found in a finished output: which tag (its ``begin``) and its parsed JSON value."""

    begin: str
    value: Any


@dataclass(frozen=True, slots=True)
class TaggedText:
    """A finished structural-tags output: the text and the tags in it, in order."""

    text: str
    tags: tuple[TaggedValue, ...]


@dataclass(frozen=True, slots=True)
class StructuralTags:
    """Free text with tags in it; between ``min_tags`` and ``max_tags`` (None: any number) tags."""

    tags: tuple[StructuralTag, ...]
    min_tags: int = 0
    max_tags: int | None = None
    # False: the output is tags only (whitespace between them), starting with the first tag at once.
    free_text: bool = True

    def __init__(
        self,
        tags: Sequence[StructuralTag],
        min_tags: int = 0,
        max_tags: int | None = None,
        free_text: bool = True,
    ) -> None:
        tags = tuple(tags)
        if not tags or not all(isinstance(t, StructuralTag) for t in tags):
            raise GrammarError("StructuralTags needs at least one StructuralTag")
        if min_tags < 0 or (max_tags is not None and not min_tags <= max_tags <= _MAX_TAGS_BOUND):
            raise GrammarError(
                f"need 0 <= min_tags <= max_tags <= {_MAX_TAGS_BOUND}, got {min_tags} and {max_tags}"
            )
        object.__setattr__(self, "tags", tags)
        object.__setattr__(self, "min_tags", min_tags)
        object.__setattr__(self, "max_tags", max_tags)
        object.__setattr__(self, "free_text", free_text)

    def to_lark(self) -> str:
        """The llguidance Lark grammar (each schema prepared strictly: a keyword llguidance does not
        enforce exactly raises UnsupportedSchemaError naming it)."""
        # Whitespace around tags is bounded: with free_text=False, unbounded whitespace lets a weak
        # model pad until max_tokens instead of starting the call the grammar requires.
        lines = ["%llguidance {}", "TEXT: /(.|\\n)*/", "WS: /[ \\t\\n]{0,4}/"]
        triggers = " | ".join(json.dumps(t.trigger if t.trigger is not None else t.begin) for t in self.tags)
        # The text after the last tag holds no trigger: a tag past max_tags cannot sneak in as text.
        lines.append(f"TAIL: TEXT & ~(TEXT ({triggers}) TEXT)")
        for i, tag in enumerate(self.tags):
            trigger = tag.trigger if tag.trigger is not None else tag.begin
            prepared = prepare_llg_schema(_json_schema(tag.schema)).grammar_json
            schema = json.loads(prepared)["grammars"][0]["json_schema"]
            rest = tag.begin[len(trigger) :]
            parts = [f"tag_{i}_trigger", json.dumps(rest) if rest else "", f"%json {json.dumps(schema)}"]
            parts.append(json.dumps(tag.end) if tag.end else "")
            if self.free_text:
                # The trigger lexeme holds the free text before it: lazy, so it ends at the first trigger.
                lines.append(f"tag_{i}_trigger[lazy]: TEXT {json.dumps(trigger)}")
            else:
                lines.append(f"tag_{i}_trigger: WS {json.dumps(trigger)}")
            lines.append(f"tag_{i}: " + " ".join(p for p in parts if p))
        lines.append("tag: " + " | ".join(f"tag_{i}" for i in range(len(self.tags))))
        required = ["tag"] * self.min_tags
        unbounded = self.max_tags is None
        optional = ["tag*"] if unbounded else ["tag?"] * (self.max_tags - self.min_tags)
        lines.append("start: " + " ".join([*required, *optional, "TAIL" if self.free_text else "WS"]))
        return "\n".join(lines) + "\n"

    def parse(self, text: str) -> TaggedText:
        """The tags of a finished output, each value validated against its tag's schema."""
        from loomlm.grammar.specs import OutputParseError

        found: list[TaggedValue] = []
        decoder = json.JSONDecoder()
        position = 0
        while True:
            starts = [(text.find(t.begin, position), t) for t in self.tags]
            starts = [(i, t) for i, t in starts if i != -1]
            if not starts:
                break
            index, tag = min(starts, key=lambda s: (s[0], -len(s[1].begin)))
            try:
                value, end = decoder.raw_decode(text, index + len(tag.begin))
            except json.JSONDecodeError as error:
                raise OutputParseError(f"the {tag.begin!r} tag does not hold valid JSON: {error}") from None
            if not text.startswith(tag.end, end):
                raise OutputParseError(f"the {tag.begin!r} tag is not closed by {tag.end!r}")
            validator = Draft202012Validator(_json_schema(tag.schema), format_checker=_FORMATS)
            errors = list(validator.iter_errors(value))
            if errors:
                raise OutputParseError(
                    f"the {tag.begin!r} tag's value violates its schema: {errors[0].message}"
                )
            found.append(TaggedValue(tag.begin, value))
            position = end + len(tag.end)
        if len(found) < self.min_tags or (self.max_tags is not None and len(found) > self.max_tags):
            raise OutputParseError(
                f"the output holds {len(found)} tags, outside [{self.min_tags}, {self.max_tags}]"
            )
        return TaggedText(text, tuple(found))
