"""The grammar and prompt of the generic tool-call format: ``tool_call_format`` (tools and
``tool_choice`` -> ``StructuralTags``, call counts bounded in the grammar), ``no_tool_call_format``
(any text without the trigger, for ``tool_choice="none"``) and ``tools_system_prompt`` (the tools
described for chat templates without tool support)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from loomlm.grammar.call_formats import HERMES, CallFormat
from loomlm.grammar.errors import GrammarError, UnsupportedSchemaError
from loomlm.grammar.llg_schema import prepare_llg_schema
from loomlm.grammar.prompt_schema import prompt_schema
from loomlm.grammar.schema_walk import resolve
from loomlm.grammar.specs import Grammar
from loomlm.grammar.structural_tags import StructuralTag, StructuralTags
from loomlm.grammar.tool_specs import (
    MAX_RELAXATIONS,
    NAMED_CHOICE,
    ToolDefinitionError,
    ToolSpec,
    tool_specs_by_name,
)


def tool_call_format(
    tools: Sequence[ToolSpec | Mapping],
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
    fmt: CallFormat = HERMES,
) -> StructuralTags | None:
    """The constrained format of an answer that may call ``tools`` in the call format ``fmt``.

    ``tool_choice``: ``"auto"`` (any number of calls, or at most one when ``parallel_tool_calls``
    is False), ``"required"`` (at least one), ``{"type": "function", "function": {"name": X}}``
    (calls of X only, at least one; exactly one unless parallel) or ``"none"``. Under "required"
    and named choices the answer is the calls alone (whitespace between). Returns None when no
    call may be made (``"none"``, or ``"auto"`` with no tools): the caller then bans the trigger
    with ``no_tool_call_format()``."""
    by_name = tool_specs_by_name(tools)
    tool_choice = "auto" if tool_choice is None else tool_choice
    max_calls = None if parallel_tool_calls else 1
    if tool_choice == "none":
        return None
    if tool_choice == "auto":
        if not by_name:
            return None
        chosen, min_calls = list(by_name.values()), 0
    elif tool_choice == "required":
        if not by_name:
            raise ToolDefinitionError("tool_choice 'required' needs at least one tool")
        chosen, min_calls = list(by_name.values()), 1
    elif isinstance(tool_choice, Mapping):
        chosen, min_calls = [_named_tool(tool_choice, by_name)], 1
    else:
        raise ToolDefinitionError(
            f"tool_choice must be 'auto', 'required', 'none' or {NAMED_CHOICE}, got {tool_choice!r}"
        )
    tags = [StructuralTag(fmt.begin(spec.name), _tag_schema(spec), fmt.end(), fmt.trigger) for spec in chosen]
    # A required or named call starts the answer at once (as OpenAI and vLLM do): with free text
    # first, a small model talks until max_tokens and never calls.
    return StructuralTags(tags, min_tags=min_calls, max_tags=max_calls, free_text=min_calls == 0)


def _named_tool(tool_choice: Mapping, by_name: dict[str, ToolSpec]) -> ToolSpec:
    function = tool_choice.get("function")
    if tool_choice.get("type") != "function" or not isinstance(function, Mapping) or "name" not in function:
        raise ToolDefinitionError(f"a named tool_choice must be {NAMED_CHOICE}, got {tool_choice!r}")
    if not by_name:
        raise ToolDefinitionError(f"tool_choice names {function['name']!r} but no tools were given")
    if not isinstance(function["name"], str) or function["name"] not in by_name:
        raise ToolDefinitionError(
            f"tool_choice names {function['name']!r}, which is not among the tools {sorted(by_name)}"
        )
    return by_name[function["name"]]


def _tag_schema(spec: ToolSpec) -> dict:
    """The schema a tool's grammar enforces: its parameters (strict: refused unless enforced
    exactly), or with strict=False what llguidance can enforce exactly of them."""
    try:
        prepared = prepare_llg_schema(spec.parameters, strict=spec.strict)
        if not prepared.dropped:
            return spec.parameters
        schema = json.loads(prepared.grammar_json)["grammars"][0]["json_schema"]
        schema.pop("x-guidance", None)
        for _ in range(MAX_RELAXATIONS):  # kept-as-a-guide keywords are refused when strict: drop them
            try:
                prepare_llg_schema(schema, strict=True)
                return schema
            except UnsupportedSchemaError as error:
                if not _drop(schema, error.pointer):
                    raise
        raise ToolDefinitionError(f"tool {spec.name!r}: too many keywords to drop from its schema")
    except ToolDefinitionError:
        raise
    except GrammarError as error:
        raise ToolDefinitionError(f"tool {spec.name!r}: {error}") from error


def _drop(schema: dict, pointer: str) -> bool:
    parent_pointer, _, key = pointer.rpartition("/")
    parent, key = resolve(schema, parent_pointer), key.replace("~1", "/").replace("~0", "~")
    if not pointer or not isinstance(parent, dict) or key not in parent:
        return False
    del parent[key]
    return True


def no_tool_call_format(fmt: CallFormat = HERMES) -> Grammar:
    """Any text that holds no call trigger of ``fmt`` (``tool_choice="none"``)."""
    trigger = json.dumps(fmt.trigger)
    return Grammar(
        f"%llguidance {{}}\nTEXT: /(.|\\n)*/\nNO_CALL: TEXT & ~(TEXT {trigger} TEXT)\nstart: NO_CALL\n"
    )


_PROMPT = """You may call one or more functions to help with the user's request. The functions are \
listed below as JSON, one per line, inside <tools></tools>:
<tools>
{tools}
</tools>

To call a function, write a JSON object with its name and arguments inside <tool_call></tool_call> \
tags, one block per call:
<tool_call>
{{"name": "<function name>", "arguments": <arguments as a JSON object>}}
</tool_call>

For example:
{example}"""


def tools_system_prompt(tools: Sequence[ToolSpec | Mapping]) -> str:
    """The generic system prompt for a chat template without tool support: an instruction, the tools
    as JSON (name, description, parameters), and the exact call format with an example."""
    by_name = tool_specs_by_name(tools)
    if not by_name:
        raise ToolDefinitionError("tools_system_prompt needs at least one tool")
    listed = [
        {"name": s.name, "description": s.description, "parameters": prompt_schema(s.parameters)}
        for s in by_name.values()
    ]
    lines = [json.dumps(tool, ensure_ascii=False) for tool in listed]
    first = next(iter(by_name.values()))
    example = HERMES.render(first.name, _example(first.parameters))
    return _PROMPT.format(tools="\n".join(lines), example=example)


def _example(schema: dict) -> dict:
    """Placeholder arguments for the prompt's example: the required properties, one value per type."""
    placeholders = {"string": "...", "integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
    properties = schema.get("properties", {})
    example = {}
    for key in [k for k in schema.get("required", []) if isinstance(properties.get(k), dict)]:
        prop = properties[key]
        kind = prop.get("type")
        example[key] = prop["enum"][0] if prop.get("enum") else placeholders.get(str(kind))
    return example
