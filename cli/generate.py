"""``loomlm generate``: complete one or more prompts and print the outputs.

All prompts run in one continuous batch. Without ``--stream`` they go through ``LLM.generate`` (a
progress bar on stderr from 8 prompts on); with ``--stream`` through ``AsyncLLM.submit`` streams,
every prompt queued at once and their texts printed in prompt order as they come. ``--json`` prints
one JSON object a line instead of the texts."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from loomlm.cli.common import FAILURE, CliError, adapters_dict, closing_engine, load_llm, read_text, write
from loomlm.cli.options import (
    add_adapter_option,
    add_engine_options,
    add_model_option,
    engine_options,
)
from loomlm.cli.sampling_options import add_sampling_options, sampling_params

DESCRIPTION = """\
Complete prompts with a model and print the outputs. Several prompts run together in one
continuous batch; their outputs are printed in prompt order, each under a `=== prompt N ===`
header when there is more than one."""

EPILOG = """\
examples:
  loomlm generate "The capital of France is" --temperature 0 --max-tokens 16
  loomlm generate "Once upon a time" --stream --seed 1
  loomlm generate "Q: 2+2?" "Q: 3+3?" --n 2 --json
  echo "Write a haiku" | loomlm generate - --model /models/llama --adapter poet=/adapters/poet

--json prints one object per completion: prompt_index, index, text, finish_reason, stop_reason,
prompt_tokens, completion_tokens (and error for a prompt that could not run). With --stream it
prints one object per streamed delta (prompt_index, index, text) and a final one per completion
with finished: true and the fields above.
"""


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate", help="complete prompts", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="prompt text; - reads one prompt from stdin")
    add_model_option(p)
    p.add_argument("--stream", action="store_true", help="print text as it is generated (needs --n 1)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of plain text")
    add_adapter_option(p, "load a PEFT LoRA adapter directory and generate with it")
    add_sampling_options(p)
    add_engine_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    params = sampling_params(args)
    if args.stream and params.n != 1:
        raise CliError("--stream prints one completion per prompt; drop --n or use --n 1")
    if sum(p == "-" for p in args.prompts) > 1:
        raise CliError("stdin can be read once: give - for one prompt only")
    prompts = [read_text(p, "the prompt") for p in args.prompts]
    adapters = adapters_dict(args.adapter)
    if len(adapters) > 1:
        raise CliError("generate runs with one adapter; give --adapter once")
    adapter = next(iter(adapters), None)
    llm = load_llm(args.model, engine_options(args), adapters)
    if args.stream:
        return asyncio.run(_stream(llm, prompts, params, adapter, args.json))
    with closing_engine(llm):
        outputs = llm.generate(prompts, params, adapter=adapter)
    return _print_outputs(outputs, args.json)


def _header(prompt_index: int, index: int, n: int) -> str:
    return f"=== prompt {prompt_index + 1}" + (f", completion {index + 1}" if n > 1 else "") + " ==="


def completion_record(prompt_index: int, output: Any, completion: Any) -> dict[str, Any]:
    return {
        "prompt_index": prompt_index,
        "index": completion.index,
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "stop_reason": completion.stop_reason,
        "prompt_tokens": len(output.prompt_token_ids),
        "completion_tokens": len(completion.token_ids),
    }


def _error_record(prompt_index: int, error: str) -> dict[str, Any]:
    return {"prompt_index": prompt_index, "error": error, "finish_reason": "error"}


def _print_outputs(outputs: list[Any], as_json: bool) -> int:
    out = sys.stdout
    failed = 0
    headers = len(outputs) > 1 or any(len(o.outputs) > 1 for o in outputs)
    for i, output in enumerate(outputs):
        if output.error is not None:
            failed += 1
            if as_json:
                write(out, json.dumps(_error_record(i, output.error), ensure_ascii=False) + "\n")
            print(f"loomlm generate: error: prompt {i + 1}: {output.error}", file=sys.stderr)
            continue
        for completion in output.outputs:
            if as_json:
                record = completion_record(i, output, completion)
                write(out, json.dumps(record, ensure_ascii=False) + "\n")
                continue
            if headers:
                write(out, _header(i, completion.index, len(output.outputs)) + "\n")
            write(out, completion.text + "\n")
    return FAILURE if failed else 0


async def _stream(llm: Any, prompts: list[str], params: Any, adapter: str | None, as_json: bool) -> int:
    """Queue every prompt, then print each stream in prompt order (the later ones keep running
    meanwhile: their pending deltas arrive merged)."""
    from loomlm import AsyncLLM, RequestError

    engine = AsyncLLM.from_engine(llm.engine)
    out = sys.stdout
    failed = 0
    try:
        streams: list[Any] = []
        for prompt in prompts:
            try:
                streams.append(await engine.submit(prompt, params, adapter=adapter))
            except RequestError as error:
                streams.append(error)
        for i, stream in enumerate(streams):
            if not as_json and len(prompts) > 1:
                write(out, _header(i, 0, 1) + "\n")
            if isinstance(stream, Exception):
                failed += 1
                _stream_error(i, str(stream), as_json)
                continue
            async with stream:
                async for item in stream:
                    if item.error is not None:
                        failed += 1
                        _stream_error(i, item.error, as_json)
                        break
                    delta = item.deltas[0]
                    if as_json and delta.text:
                        record = {"prompt_index": i, "index": 0, "text": delta.text, "finished": False}
                        write(out, json.dumps(record, ensure_ascii=False) + "\n")
                    elif delta.text:
                        write(out, delta.text)
                    if item.finished:
                        if as_json:
                            record = completion_record(i, item.output, item.output.outputs[0])
                            write(out, json.dumps({**record, "finished": True}, ensure_ascii=False) + "\n")
                        else:
                            write(out, "\n")
    finally:
        await engine.shutdown()
    return FAILURE if failed else 0


def _stream_error(prompt_index: int, message: str, as_json: bool) -> None:
    if as_json:
        write(sys.stdout, json.dumps(_error_record(prompt_index, message), ensure_ascii=False) + "\n")
    print(f"loomlm generate: error: prompt {prompt_index + 1}: {message}", file=sys.stderr)
