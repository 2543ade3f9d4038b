"""``loomlm extract``: a JSON value from a text, under a JSON Schema.

The schema file is read and checked first (a file that is missing, not JSON or not a valid JSON
Schema is a usage error, exit code 2, before the model loads). Then ``LLM.extract`` generates under
the schema's grammar and validates the result; the value is printed as JSON on stdout. An output
that stops before the value is complete or does not validate is exit code 1, never a partial
object."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from loomlm.cli.common import (
    FAILURE,
    CliError,
    adapters_dict,
    closing_engine,
    load_llm,
    read_text,
    validation_message,
    write,
)
from loomlm.cli.options import add_adapter_option, add_engine_options, add_model_option, engine_options

# As LLM.extract's own instructions; {schema} is replaced by the compact schema.
INSTRUCTIONS = (
    "Extract the requested information from the user's text. Answer with one JSON object that "
    "follows this JSON Schema, using only facts stated in the text:\n{schema}"
)

DESCRIPTION = """\
Extract a JSON value that follows a JSON Schema from a text and print it. Generation runs under
the schema's grammar, so the output is valid JSON of the schema's shape; it is then validated
against the whole schema. Exit code 2 for a bad schema file, 1 when the model's output stops
before the value is complete (raise --max-tokens) or does not validate."""

EPILOG = """\
examples:
  loomlm extract --schema person.json "John Smith is 42 years old and lives in Boston."
  cat email.txt | loomlm extract --schema invoice.json - --indent 2

person.json:
  {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
   "required": ["name", "age"], "additionalProperties": false}
"""


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "extract",
        help="extract JSON from a text under a JSON Schema",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=formatter,
    )
    p.add_argument("text", metavar="TEXT", help="the text to extract from; - reads it from stdin")
    p.add_argument("--schema", required=True, metavar="FILE", help="JSON Schema file (a JSON object)")
    add_model_option(p)
    p.add_argument(
        "--instructions",
        metavar="TEXT",
        help="system prompt instead of the default; {schema} in it is replaced by the schema",
    )
    p.add_argument(
        "--no-strict",
        dest="strict",
        action="store_false",
        help="drop schema keywords the grammar cannot enforce and only validate them afterwards",
    )
    p.add_argument("--indent", type=int, metavar="N", help="pretty-print the JSON with this indent")
    add_adapter_option(p, "load a PEFT LoRA adapter directory and extract with it")
    g = p.add_argument_group("sampling options")
    g.add_argument("--max-tokens", type=int, default=512, metavar="N", help="most tokens to generate")
    g.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 is greedy decoding")
    g.add_argument("--seed", type=int, metavar="S", help="sampling seed (with a temperature above 0)")
    add_engine_options(p)
    return p


def load_schema(path: str) -> dict[str, Any]:
    """The schema in ``path``, checked as a JSON Schema (2020-12) and against loomlm's size bounds;
    a ``CliError`` (exit code 2) naming the problem otherwise."""
    from loomlm import GrammarError
    from loomlm.grammar.specs import JsonSchema, resolve_response_format

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(
            f"cannot read the schema file {path}: {getattr(error, 'strerror', None) or error}"
        ) from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"schema file {path} is not JSON: {error}") from None
    if not isinstance(schema, dict):
        raise CliError(f"schema file {path} must hold a JSON object, not {type(schema).__name__}")
    try:
        resolve_response_format(JsonSchema(schema))  # size bounds, then Draft 2020-12's meta-schema
    except GrammarError as error:
        raise CliError(f"schema file {path} is not a usable JSON Schema: {error}") from None
    return schema


def run(args: argparse.Namespace) -> int:
    import pydantic

    from loomlm import ExtractionError, SamplingParams

    schema = load_schema(args.schema)
    text = read_text(args.text, "the text")
    if not text.strip():
        raise CliError("the text to extract from is empty")
    try:
        params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
    except pydantic.ValidationError as error:
        raise CliError(f"bad sampling option: {validation_message(error)}") from None
    compact = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    system = (args.instructions or INSTRUCTIONS).replace("{schema}", compact)
    # LLM.extract takes a conversation as given: the schema is a dict, not a type to describe.
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    adapters = adapters_dict(args.adapter)
    if len(adapters) > 1:
        raise CliError("extract runs with one adapter; give --adapter once")
    llm = load_llm(args.model, engine_options(args), adapters)
    with closing_engine(llm):
        try:
            value = llm.extract(
                schema,
                messages,
                sampling_params=params,
                strict=args.strict,
                adapter=next(iter(adapters), None),
            )
        except ExtractionError as error:
            output = error.output
            if output is not None and output.error is not None:  # refused before generating
                raise CliError(str(error)) from None
            raise CliError(f"{error}", code=FAILURE) from None
    write(sys.stdout, json.dumps(value, ensure_ascii=False, indent=args.indent) + "\n")
    return 0
