"""Structural tags: free text until a tag's trigger, then one JSON value under the tag's schema and
its end string; the number of tags bounded in the grammar. Checked token by token with the real
SmolLM2 tokenizer through the llguidance backend, as the engine feeds a matcher."""

from __future__ import annotations

import pytest

from loomlm.grammar.errors import GrammarError, UnsupportedSchemaError
from loomlm.grammar.specs import OutputParseError, resolve_response_format
from loomlm.grammar.structural_tags import StructuralTag, StructuralTags, TaggedValue

CALL = StructuralTag(
    "<tool>",
    {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    },
    "</tool>",
)
FLAG = StructuralTag("<flag>", {"type": "boolean"}, "</flag>")


def test_free_text_around_a_tag_whose_value_follows_its_schema(llg_accepts):
    fmt = StructuralTags([CALL, FLAG])
    assert llg_accepts(fmt, 'Let me check. <tool>{"n":3}</tool> Done.')
    assert llg_accepts(fmt, "No tags at all.")
    assert llg_accepts(fmt, '<flag>true</flag> and <tool>{"n":-1}</tool>')
    assert not llg_accepts(fmt, '<tool>{"n":"three"}</tool>')  # violates the schema
    assert not llg_accepts(fmt, '<tool>{"n":3}')  # not closed


def test_tag_counts_are_bounded_in_the_grammar(llg_accepts):
    one = StructuralTags([CALL], min_tags=1, max_tags=1)
    assert not llg_accepts(one, "I will not call anything.")  # required
    assert llg_accepts(one, 'Sure: <tool>{"n":1}</tool>')
    # A second call cannot appear, not even as free text after the first.
    assert not llg_accepts(one, '<tool>{"n":1}</tool> <tool>{"n":2}</tool>')


def test_parse_returns_the_tags_in_order_validated():
    fmt = StructuralTags([CALL, FLAG])
    parsed = fmt.parse('a <flag>false</flag> b <tool>{"n":7}</tool> c')
    assert parsed.tags == (TaggedValue("<flag>", False), TaggedValue("<tool>", {"n": 7}))
    with pytest.raises(OutputParseError, match="violates"):
        fmt.parse('<tool>{"n":"x"}</tool>')
    with pytest.raises(OutputParseError, match="outside"):
        StructuralTags([CALL], min_tags=1).parse("nothing")


def test_bad_tags_are_refused_clearly():
    with pytest.raises(GrammarError, match="prefix"):
        StructuralTag("<tool>", {"type": "integer"}, trigger="<x")
    with pytest.raises(GrammarError, match="max_tags"):
        StructuralTags([CALL], min_tags=2, max_tags=1)
    with pytest.raises(UnsupportedSchemaError, match="uniqueItems"):
        resolve_response_format(
            StructuralTags([StructuralTag("<t>", {"type": "array", "uniqueItems": True})])
        )


def test_without_free_text_the_output_is_the_tags_alone(llg_accepts):
    calls_only = StructuralTags([CALL], min_tags=1, free_text=False)
    assert llg_accepts(calls_only, '<tool>{"n":1}</tool>')
    assert llg_accepts(calls_only, '<tool>{"n":1}</tool>\n<tool>{"n":2}</tool>\n')
    assert not llg_accepts(calls_only, 'Sure: <tool>{"n":1}</tool>')
    assert not llg_accepts(calls_only, '<tool>{"n":1}</tool> done')
