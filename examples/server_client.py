"""The official ``openai`` client and ``instructor`` against ``loomlm serve``: chat, streaming, a
strict JSON Schema, a tool call and a typed extraction, all through the OpenAI-compatible API.

    python examples/server_client.py                       # starts `loomlm serve` (default model)
    python examples/server_client.py --base-url http://127.0.0.1:8000/v1 --api-key KEY   # a running one

Without ``--base-url`` it starts ``loomlm serve`` on a free loopback port with a random API key,
waits for ``/health``, and stops it with SIGTERM at the end (a graceful drain, exit code 0)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import instructor
import openai
from pydantic import BaseModel, Field


class Person(BaseModel):
    name: str = Field(max_length=40)
    age: int = Field(ge=0, le=150)
    city: str = Field(max_length=40)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1, "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


@contextmanager
def local_server(model: str | None):
    """``loomlm serve`` on a free loopback port; yields (base_url, api_key); SIGTERM at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api_key = secrets.token_urlsafe(16)
    command = [sys.executable, "-m", "loomlm.cli.main", "serve", "--port", str(port)]
    command += [model] if model else []
    server = subprocess.Popen(command, env={**os.environ, "LOOMLM_API_KEY": api_key})
    try:
        deadline = time.monotonic() + 300  # the first run converts the default model once
        while True:
            if server.poll() is not None:
                raise SystemExit(f"loomlm serve exited with code {server.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("loomlm serve did not become healthy in time")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", api_key
    finally:
        server.send_signal(signal.SIGTERM)
        print(f"\nserver stopped with exit code {server.wait(timeout=120)}")


def run(client: openai.OpenAI) -> None:
    model = client.models.list().data[0].id
    print("models:", [m.id for m in client.models.list().data])

    hello = [{"role": "user", "content": "Name three primary colors."}]
    reply = client.chat.completions.create(model=model, messages=hello, max_tokens=48, temperature=0)
    print("\nchat:", reply.choices[0].message.content, f"({reply.usage.completion_tokens} tokens)")

    print("\nstreamed: ", end="")
    stream = client.chat.completions.create(
        model=model,
        messages=hello,
        max_tokens=48,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()

    text = "Maria Lopez is 34 and lives in Madrid."
    schema_reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"Extract the person as JSON: {text}"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": Person.model_json_schema(), "strict": True},
        },
        temperature=0,
        max_tokens=96,
    )
    print("\njson_schema:", Person.model_validate_json(schema_reply.choices[0].message.content))

    tool_reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in London in celsius?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=96,
    )
    call = tool_reply.choices[0].message.tool_calls[0]
    print(
        "\ntool call:",
        call.function.name,
        json.loads(call.function.arguments),
        tool_reply.choices[0].finish_reason,
    )

    for mode in (instructor.Mode.JSON_SCHEMA, instructor.Mode.TOOLS):
        person = instructor.from_openai(client, mode=mode).chat.completions.create(
            model=model,
            response_model=Person,
            messages=[{"role": "user", "content": text}],
            temperature=0,
            max_tokens=96,
        )
        print(f"instructor ({mode.value}):", repr(person))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running server's /v1 URL (default: start one)")
    parser.add_argument("--api-key", default=os.environ.get("LOOMLM_API_KEY", "none"))
    parser.add_argument(
        "--model", help="model directory for the server this starts (default model if omitted)"
    )
    args = parser.parse_args()
    if args.base_url:
        run(openai.OpenAI(base_url=args.base_url, api_key=args.api_key))
        return
    with local_server(args.model) as (base_url, api_key):
        run(openai.OpenAI(base_url=base_url, api_key=api_key))


if __name__ == "__main__":
    main()
