"""JSON Schema (draft 2020-12) -> llguidance grammar that keeps loomlm's promise for every keyword.

The schema *document* is walked once (local ``#/...`` targets by pointer, so recursion terminates) and
each keyword is passed on (llguidance 1.9.1 enforces it exactly), removed (a 2020-12 no-op), rewritten
exactly, or refused when strict (``UnsupportedSchemaError``) and otherwise listed in ``dropped`` for
validation after generation: removed when llguidance does not enforce it, kept as a guide when it does
so only approximately. What llguidance refuses while compiling is located by recompiling with candidate
keywords removed. Strings are written without ``\\u``/``\\/`` escapes, so no extra key can alias a
declared one. docs/json_schema_keywords.md has the per-keyword table and the reasons.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from llguidance import LLMatcher

from loomlm.grammar.errors import GrammarCompileError, InvalidSchemaError, UnsupportedSchemaError
from loomlm.grammar.schema_walk import escape, resolve, subschemas

_IN_PLACE = ("$ref", "$dynamicRef", "allOf", "anyOf", "oneOf", "not", "if", "then", "else")
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_LITERALS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "const", "enum")
_NOT_DRAFT = ("$recursiveRef", "$recursiveAnchor", "dependencies", "x-guidance")  # 2020-12 ignores them
_UNEVALUATED = ("unevaluatedProperties", "unevaluatedItems")
_UNSUPPORTED = ("not", "if", "then", "else", "dependentRequired", "dependentSchemas", "propertyNames")
_UNSUPPORTED += ("uniqueItems", "contains", "minContains", "maxContains", *_UNEVALUATED, "$dynamicRef")
_UNSUPPORTED += ("$dynamicAnchor",)  # only when beside another $anchor
_FORMATS = {"duration", "email", "hostname", "ipv4", "ipv6", "uuid", "uri", "unknown"}  # exact or narrower
_APPROX_FORMATS = {"date": "29 February of every year", "time": "second 60"}
_APPROX_FORMATS["date-time"] = "29 February of every year and second 60"
_MISSING_FORMATS = {"idn-email", "idn-hostname", "iri", "iri-reference", "uri-reference", "uri-template"}
_MISSING_FORMATS |= {"json-pointer", "relative-json-pointer", "regex"}
_SPEC_FORMATS = _FORMATS | _APPROX_FORMATS.keys() | _MISSING_FORMATS
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f]")  # characters JSON can only spell as \u escapes
_CONTROL_ESCAPE = re.compile(r"x[01]|x\{|u00[01]|u\{|[cv0]")  # ... and how a pattern may spell them
_CONTROL_WHY = "a control character that only a \\u escape can spell (never generated)"
# llguidance error message fragment -> keywords that may cause it
_CAUSES = {"oneOf constraints": ("oneOf",), "min/maxProperties": ("minProperties", "maxProperties")}
_CAUSES |= {"regex": ("pattern", "patternProperties"), "Unknown format": ("format",)}
_CAUSES |= {"Resource '": ("$ref",), "circular references": ("$ref",)}
_MAX_TRIES = 64  # compiles spent locating one error; errors fixed (strict=False) per schema

Fix = Callable[[dict], tuple[str, str] | None]  # may return (new, original) pointer of a move
Whitespace = Literal["compact", "pretty"]


@dataclass(frozen=True, slots=True)
class LlgSchema:
    """``grammar_json`` for ``LLMatcher``; ``dropped``: the (keyword, JSON pointer) pairs strict=False
    removed or relaxed, so the output must be validated after generation."""

    grammar_json: str
    dropped: tuple[tuple[str, str], ...]


def llg_json_options(whitespace: Whitespace = "compact", indent: int = 2) -> dict:
    """llguidance ``JsonCompileOptions`` for our layouts. "compact" is exact (no whitespace, "," and ":").
    "pretty" is a superset of ``json.dumps(indent=n)``: ": " after keys, and at each token boundary
    optionally one newline plus a multiple of ``indent`` spaces (the depth is not tracked)."""
    if whitespace not in ("compact", "pretty"):
        raise ValueError(f"whitespace must be 'compact' or 'pretty', got {whitespace!r}")
    if isinstance(indent, bool) or not isinstance(indent, int) or not 0 <= indent <= 16:
        raise ValueError(f"indent must be an int in [0, 16], got {indent!r}")
    options: dict = {"lenient": False, "coerce_one_of": False, "item_separator": ","}
    options |= {"json_allowed_escapes": '"\\bfnrt', "json_allow_general_unicode_escapes": False}
    if whitespace == "compact":
        return options | {"whitespace_flexible": False, "key_separator": ":"}
    spaces = f"(?: {{{indent}}})*" if indent else ""
    pretty = {"whitespace_flexible": True, "key_separator": ": "}
    return options | pretty | {"whitespace_pattern": "\\n" + spaces}


def prepare_llg_schema(
    schema: dict | bool, *, strict: bool = True, whitespace: Whitespace = "compact", indent: int = 2
) -> LlgSchema:
    """The llguidance grammar of ``schema``. Raises ``InvalidSchemaError`` (malformed or unsatisfiable),
    ``UnsupportedSchemaError`` (strict: a keyword llguidance does not enforce exactly, with its pointer)
    or ``GrammarCompileError`` (another llguidance refusal, e.g. a size limit)."""
    options = llg_json_options(whitespace, indent)
    if not isinstance(schema, dict | bool):
        raise InvalidSchemaError(f"a schema must be a dict or a bool, got {type(schema).__name__}")
    if schema is False:
        raise InvalidSchemaError("no JSON value satisfies this schema")
    try:  # check_schema, deepcopy and llguidance's JSON reading recurse: deep nesting is refused
        Draft202012Validator.check_schema(schema)
        doc = {} if schema is True else copy.deepcopy(schema)
    except SchemaError as exc:
        raise InvalidSchemaError(exc.message, "".join(f"/{t}" for t in exc.path)) from None
    except RecursionError:
        raise InvalidSchemaError("the schema is nested too deeply to read") from None
    if "$schema" in doc:  # outputs are validated as 2020-12, whatever the schema declares
        doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    prep = _Preparer(doc, strict)
    for pointer, node in subschemas(doc):
        prep.visit(node, pointer)
    return LlgSchema(prep.compile(options), tuple(prep.dropped))


class _Preparer:
    def __init__(self, doc: dict, strict: bool) -> None:
        self.doc, self.strict = doc, strict
        self.dropped: dict[tuple[str, str], None] = {}  # an ordered set
        self.moved: list[tuple[str, str]] = []  # (new, original) pointers of relaxed oneOf groups

    def refuse(self, keyword: str, pointer: str, reason: str) -> None:
        if self.strict:
            raise UnsupportedSchemaError(keyword, pointer, reason)
        self.dropped.setdefault((keyword, pointer), None)

    def visit(self, node: dict, ptr: str) -> None:
        in_place = any(k in node for k in (*_IN_PLACE, "dependentSchemas"))  # a lone "if" counts too
        node.update({k: int(node[k]) for k in _COUNTS if isinstance(node.get(k), float)})
        silent = [*_NOT_DRAFT, *(k for k in _UNEVALUATED if node.get(k) is True)]
        silent += ["then", "else"] if "if" not in node else [] if "then" in node or "else" in node else ["if"]
        silent += ["minContains", "maxContains"] if "contains" not in node else []
        silent += ["uniqueItems"] if node.get("uniqueItems") is False else []
        silent += [] if node.get("format") in _SPEC_FORMATS else ["format"]
        for kw in silent:
            node.pop(kw, None)
        anchor = node.get("$dynamicAnchor")
        if anchor is not None and node.setdefault("$anchor", anchor) == anchor:
            del node["$dynamicAnchor"]  # no $dynamicRef is honoured, so it is a plain anchor
        for kw, twin in zip(_UNEVALUATED, ("additionalProperties", "items"), strict=True):
            if kw in node and not in_place and not (twin == "items" and "contains" in node):
                node.setdefault(twin, node.pop(kw))  # a present twin already evaluates everything
        fmt = node.get("format")
        if fmt == "hostname":  # fqdn's 253-character limit, which llguidance's label regex lacks
            node["maxLength"] = min(node.get("maxLength", 253), 253)
        elif fmt in _APPROX_FORMATS:
            self.refuse("format", f"{ptr}/format", f"llguidance's {fmt} accepts {_APPROX_FORMATS[fmt]}")
        elif fmt in _MISSING_FORMATS:
            self.refuse("format", f"{ptr}/format", f"llguidance has no {fmt!r} format")
            del node["format"]
        risks = [(kw, f"{ptr}/{kw}", _literal_risk(node[kw])) for kw in _LITERALS if kw in node]
        step = node.get("multipleOf")
        if isinstance(step, float) and Fraction(repr(step)) != Fraction(step):
            why = "llguidance checks it in exact decimals, the output validator in binary floats"
            risks.append(("multipleOf", f"{ptr}/multipleOf", why))
        if isinstance(node.get("pattern"), str):
            risks.append(("pattern", f"{ptr}/pattern", _pattern_risk(node["pattern"])))
        for key in node.get("patternProperties", {}):
            risks.append(("patternProperties", f"{ptr}/patternProperties/{escape(key)}", _pattern_risk(key)))
        for kw, pointer, why in risks:
            if why:
                self.refuse(kw, pointer, why)  # not strict: kept in the grammar as a guide
        for kw in _UNSUPPORTED:
            if kw in node:
                why = "only on a schema without in-place applicators" if kw in _UNEVALUATED else ""
                self.refuse(kw, f"{ptr}/{kw}", why or f"llguidance does not implement {kw}")
                del node[kw]

    def compile(self, options: dict) -> str:
        fixed: set[str] = set()
        for _ in range(_MAX_TRIES):
            grammar, error = _try_compile(self.doc, options)
            if not error:
                return grammar
            if error.startswith("Unsatisfiable"):
                raise InvalidSchemaError(f"no JSON value satisfies this schema (llguidance: {error})")
            keyword, pointer, fix = self._locate(error, options)
            if pointer in fixed:  # removing it did not help: give up rather than loop
                raise GrammarCompileError(f"llguidance cannot compile this schema: {error}")
            fixed.add(pointer)
            for new, old in reversed(self.moved):  # report pointers into the user's document
                pointer = old + pointer[len(new) :] if f"{pointer}/".startswith(f"{new}/") else pointer
            self.refuse(keyword, pointer, f"llguidance refuses it: {error}")
            self.moved += [moved] if (moved := fix(self.doc)) else []
        raise GrammarCompileError(f"llguidance refused this schema {_MAX_TRIES} times")

    def _locate(self, error: str, options: dict) -> tuple[str, str, Fix]:
        """The keyword llguidance refused: the candidate that alone keeps the error, or (a cycle of
        references) the one whose removal alone changes it."""
        unimplemented = re.match(r"Unimplemented keys: \[(.*)\]", error)
        causes = [*re.findall(r'"([^"]+)"', unimplemented[1]), "$ref"] if unimplemented else []
        causes += re.findall(r"for '([$\w]+)'", error)  # "Value for 'multipleOf' has too many digits"
        causes += [kw for fragment, kws in _CAUSES.items() if fragment in error for kw in kws]
        candidates = list(_candidates(self.doc, causes))[: _MAX_TRIES // 2]
        deepest_first = sorted(range(len(candidates)), key=lambda i: -candidates[i][1].count("/"))
        for isolate in (True, False):
            for index, candidate in enumerate(candidates):
                trial = copy.deepcopy(self.doc)
                for other in deepest_first:  # a fix may move its subtree: descendants go first
                    if (other != index) == isolate:
                        candidates[other][2](trial)
                if (_try_compile(trial, options)[1] == error) == isolate:
                    return candidate
        if candidates:
            return candidates[0]
        raise UnsupportedSchemaError(causes[0], "", error) if causes else GrammarCompileError(error)


def _try_compile(doc: dict, options: dict) -> tuple[str, str]:
    grammar = LLMatcher.grammar_from_json_schema(doc, overrides=options)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    return grammar, messages[0] if is_error else ""


def _candidates(doc: dict, keywords: list[str]) -> Iterator[tuple[str, str, Fix]]:
    for ptr, node in subschemas(doc):
        for kw in keywords:
            keys = list(node.get(kw) or {}) if kw == "patternProperties" else [None] if kw in node else []
            for key in keys:
                yield kw, f"{ptr}/{kw}" + ("" if key is None else f"/{escape(key)}"), _fix(ptr, kw, key)


def _fix(ptr: str, keyword: str, key: str | None) -> Fix:
    def fix(doc: dict) -> tuple[str, str] | None:
        node = resolve(doc, ptr)
        if not isinstance(node, dict) or keyword not in node:
            return None
        if key is not None:
            node[keyword].pop(key, None)
        elif keyword == "oneOf" and "anyOf" not in node:  # relaxed: anyOf admits every oneOf instance
            node["anyOf"] = node.pop("oneOf")
            return f"{ptr}/anyOf", f"{ptr}/oneOf"
        elif keyword == "oneOf":
            node.setdefault("allOf", []).append({"anyOf": node.pop("oneOf")})
            return f"{ptr}/allOf/{len(node['allOf']) - 1}/anyOf", f"{ptr}/oneOf"
        else:
            del node[keyword]
        return None

    return fix


def _literal_risk(value: object) -> str | None:
    """Why llguidance may not produce exactly the JSON value ``value`` (a bound, const or enum)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool) and float(item) != item:
            return "llguidance rounds integers beyond 2**53 to 64-bit floats"
        if isinstance(item, str) and _CONTROL.search(item):
            return _CONTROL_WHY
        stack += [*item, *item.values()] if isinstance(item, dict) else item if isinstance(item, list) else []
    return None


def _pattern_risk(pattern: str) -> str | None:
    """Why llguidance (Rust regex, no \\u escapes) and Python ``re`` may disagree on ``pattern``."""
    negated: bool | None = None  # None: outside a character class
    i = 0
    while i < len(pattern):
        ch, nxt = pattern[i], pattern[i + 1 : i + 2]
        if _CONTROL.match(ch) or (ch == "\\" and _CONTROL_ESCAPE.match(pattern, i + 1)):
            return _CONTROL_WHY
        if ch == "\\" and (nxt in ("D", "W", "S") or (negated and nxt in ("d", "w", "s"))):
            return f"\\{nxt} is ASCII in llguidance and Unicode in Python re"
        if negated is not None and (ch == "[" or pattern[i : i + 2] in ("&&", "--", "~~")):
            return "nested classes and class set operations differ between Rust regex and Python re"
        if ch == "\\":
            i += 2
        elif negated is None and ch == "[":
            negated = nxt == "^"
            i += 1 + negated + (pattern[i + 1 + negated : i + 2 + negated] == "]")
        else:
            negated = None if ch == "]" else negated
            i += 1
    return None
