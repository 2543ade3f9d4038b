"""The JSON Schema -> regex translator: one object per translation, walking the schema.

Each schema object is first *flattened*: ``$ref`` targets and ``allOf`` members are merged into it
(``schema_merge``), so what remains is one set of keywords plus pending ``anyOf``/``oneOf`` groups,
which are distributed over the rest. ``enum``/``const`` are handled exactly by filtering their values with
jsonschema against the original schema object; otherwise the regex is the union, over the allowed types,
of what each type's keywords allow (``schema_types``). ``None`` stands for the empty language.
Every combination of sub-regexes goes through ``self.budget`` (``schema_budget``), which also bounds the
nesting of translator steps: an oversize or too deep translation stops before its memory is spent.
"""

from __future__ import annotations

import referencing.exceptions
from jsonschema import Draft202012Validator

from loomlm.grammar.errors import UnsupportedSchemaError
from loomlm.grammar.schema_budget import TranslationBudget
from loomlm.grammar.schema_layout import Layout, any_value_regex
from loomlm.grammar.schema_merge import ANY_OF_GROUPS, ORIGINS, merge, type_set, value_key
from loomlm.grammar.schema_options import DroppedKeyword, SchemaOptions
from loomlm.grammar.schema_refs import RefResolver
from loomlm.grammar.schema_types import TypeBuilders

# Depth of containers allowed where a schema says "any value" ({} / true / no items schema ...).
ANY_VALUE_DEPTH = 1
_COMBINATORS = ("$ref", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas")
# Keywords that constrain every type and that no regex here can express.
_GENERIC_UNSUPPORTED = {
    "not": "negation cannot be expressed as a regex",
    "$dynamicRef": "dynamic references are not supported",
    "$recursiveRef": "dynamic references are not supported",
}


def _ptr(base: str, *tokens: object) -> str:
    return base + "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in tokens)


class SchemaTranslator:
    """Translates one root schema; collects the keywords dropped when not strict."""

    def __init__(self, root: dict | bool, options: SchemaOptions) -> None:
        self.options = options
        self._root = root
        self._refs = RefResolver(root, options.max_recursion_depth)
        self._dropped: dict[tuple[str, str], DroppedKeyword] = {}
        self._validator = Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)
        self.budget = TranslationBudget(options.max_regex_len)
        self._any_values: dict[Layout, str] = {}
        self._types = TypeBuilders(self)

    @property
    def dropped(self) -> tuple[DroppedKeyword, ...]:
        return tuple(self._dropped.values())

    def refuse(self, keyword: str, pointer: str, reason: str) -> None:
        """Strict: raise. Otherwise record the keyword as dropped; the caller then ignores it."""
        if self.options.strict:
            raise UnsupportedSchemaError(keyword, pointer, reason)
        self._dropped.setdefault((keyword, pointer), DroppedKeyword(keyword, pointer, reason))

    def resolve_quietly(self, ref: object) -> object:
        """The target of ``ref``, or ``True`` when it cannot be resolved (callers then assume nothing)."""
        try:
            return self._refs.resolve(ref, "")[1]
        except ValueError:
            return True

    def keyword_pointer(self, flat: dict, keyword: str) -> str:
        return _ptr(flat.get(ORIGINS, {}).get(keyword, ""), keyword)

    def any_value(self, layout: Layout) -> str:
        if layout not in self._any_values:
            self._any_values[layout] = self.budget.leaf(any_value_regex(layout, ANY_VALUE_DEPTH))
        return self._any_values[layout]

    def translate(self, node: object, pointer: str, layout: Layout) -> str | None:
        """The regex of ``node`` at ``pointer``, laid out at ``layout``; None = no value matches."""
        if node is True:
            return self.any_value(layout)
        if node is False:
            return None
        entered: list[str] = []
        self.budget.enter(pointer)
        try:
            flat = self._flatten(node, pointer, entered)
            return None if flat is None else self._translate_flat(flat, node, layout)
        finally:
            self.budget.leave()
            for target in entered:
                self._refs.leave(target)

    def _flatten(self, node: object, pointer: str, entered: list[str]) -> dict | None:
        if node is True:
            return {ORIGINS: {}}
        if node is False:
            return None
        if "$id" in node and pointer:
            self.refuse("$id", _ptr(pointer, "$id"), "a nested $id changes how references resolve")
        flat = {k: v for k, v in node.items() if k not in ("$ref", "allOf", "anyOf", "oneOf", "$id")}
        self._plain_unevaluated(node, flat, pointer)
        flat[ORIGINS] = dict.fromkeys(flat, pointer)
        groups = [(kind, node[kind], _ptr(pointer, kind)) for kind in ("anyOf", "oneOf") if kind in node]
        if groups:
            flat[ANY_OF_GROUPS] = groups
        members: list[tuple[object, str]] = []
        if "$ref" in node:
            try:
                target, schema = self._refs.resolve(node["$ref"], _ptr(pointer, "$ref"))
            except UnsupportedSchemaError as exc:  # strict: raised again; otherwise the $ref is dropped
                self.refuse(exc.keyword, exc.pointer, str(exc))
                target, schema = None, True
            if target is not None:
                if not self._refs.enter(target):
                    return None
                entered.append(target)
                members.append((schema, target[1:]))
        members += [(sub, _ptr(pointer, "allOf", i)) for i, sub in enumerate(node.get("allOf", []))]
        for sub, sub_pointer in members:
            self.budget.enter(sub_pointer)  # $ref and allOf chains nest here
            try:
                sub_flat = self._flatten(sub, sub_pointer, entered)
            finally:
                self.budget.leave()
            if sub_flat is None:
                return None
            flat = merge(flat, sub_flat, self.refuse)
        return flat

    def _plain_unevaluated(self, node: dict, flat: dict, pointer: str) -> None:
        """``unevaluated*`` on a schema without combinators is ``additionalProperties``/``items``."""
        for keyword, equivalent in (
            ("unevaluatedProperties", "additionalProperties"),
            ("unevaluatedItems", "items"),
        ):
            if keyword not in node:
                continue
            value = flat.pop(keyword)
            if any(c in node for c in _COMBINATORS) or (keyword == "unevaluatedItems" and "contains" in node):
                self.refuse(keyword, _ptr(pointer, keyword), "only supported on schemas without combinators")
            elif equivalent not in node:
                flat[equivalent] = value

    def _translate_flat(self, flat: dict, origin: dict, layout: Layout) -> str | None:
        if "const" in flat or "enum" in flat:
            return self._finite_values(flat, origin, layout)
        if flat.get(ANY_OF_GROUPS):
            return self._distribute(flat, origin, layout)
        for keyword, reason in _GENERIC_UNSUPPORTED.items():
            if keyword in flat:
                self.refuse(keyword, self.keyword_pointer(flat, keyword), reason)
        if "if" in flat and ("then" in flat or "else" in flat):
            self.refuse("if", self.keyword_pointer(flat, "if"), "conditional schemas are not supported")
        types = type_set(flat)
        options = self.budget.alternatives()
        for type_name in ("null", "boolean", "integer", "number", "string", "array", "object"):
            if type_name not in types or (type_name == "integer" and "number" in types):
                continue
            options.add(self._types.build(type_name, flat, layout))
        return options.regex()

    def _finite_values(self, flat: dict, origin: dict, layout: Layout) -> str | None:
        """Values listed by enum/const, kept when jsonschema accepts them against the whole schema."""
        values = [flat["const"]] if "const" in flat else []
        values += flat.get("enum", [])
        if "const" in flat and "enum" in flat:
            keys = {value_key(v) for v in flat["enum"]}
            values = [values[0]] if value_key(values[0]) in keys else []
        validator = self._validator.evolve(schema=origin)
        try:
            kept = [v for v in values if validator.is_valid(v)]
        except referencing.exceptions.Unresolvable:
            self.refuse("enum", self.keyword_pointer(flat, "enum"), "the schema has unresolvable references")
            kept = values
        options = self.budget.alternatives()
        for value in kept:
            options.add(layout.literal(value))
        return options.regex()

    def _distribute(self, flat: dict, origin: dict, layout: Layout) -> str | None:
        """``rest AND anyOf[b1, b2..]`` = ``anyOf[rest AND b1, rest AND b2 ..]``."""
        (kind, branches, pointer), *later = flat[ANY_OF_GROUPS]
        rest = {**flat, ANY_OF_GROUPS: later}
        if kind == "oneOf" and not self._types.pairwise_disjoint(branches):
            self.refuse("oneOf", pointer, "its branches may overlap, so 'exactly one' cannot be enforced")
        options = self.budget.alternatives()
        for index, branch in enumerate(branches):
            entered: list[str] = []
            self.budget.enter(_ptr(pointer, index))  # each later anyOf group nests one step deeper
            try:
                branch_flat = self._flatten(branch, _ptr(pointer, index), entered)
                if branch_flat is None:
                    continue
                options.add(self._translate_flat(merge(rest, branch_flat, self.refuse), origin, layout))
            finally:
                self.budget.leave()
                for target in entered:
                    self._refs.leave(target)
        return options.regex()
