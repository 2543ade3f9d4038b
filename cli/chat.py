"""``loomlm chat``: a conversation with a model over stdin, through its chat template.

Each line read is a user message; the reply streams to stdout as it is generated
(``AsyncLLM.chat_stream``) and joins the conversation. ``/reset`` starts over (keeping ``--system``),
``/exit`` (or EOF) ends. On a terminal the input has a prompt and line editing; from a pipe the
lines are read as they come and only the replies are printed, one block per message."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from loomlm.cli.common import FAILURE, CliError, adapters_dict, load_llm, write
from loomlm.cli.options import (
    add_adapter_option,
    add_engine_options,
    add_model_option,
    engine_options,
)
from loomlm.cli.sampling_options import add_sampling_options, sampling_params

DESCRIPTION = """\
Chat with a model: each line on stdin is a message, the reply streams back as it is generated
and the conversation carries on. Commands: /reset forgets the conversation (the --system message
stays), /exit or end of input (Ctrl-D) quits, /help lists them. Ctrl-C stops a reply."""

EPILOG = """\
examples:
  loomlm chat
  loomlm chat --system "You answer in one sentence." --temperature 0.7 --max-tokens 128
  printf 'Hi!\\nName three colors.\\n' | loomlm chat --temperature 0
"""

COMMANDS = "/reset: forget the conversation  /exit: quit  /help: this list"


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "chat", help="chat over stdin", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    add_model_option(p)
    p.add_argument("-s", "--system", metavar="TEXT", help="system message at the start of the conversation")
    add_adapter_option(p, "load a PEFT LoRA adapter directory and chat with it")
    add_sampling_options(p, n=False)
    add_engine_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    params = sampling_params(args)
    adapters = adapters_dict(args.adapter)
    if len(adapters) > 1:
        raise CliError("chat runs with one adapter; give --adapter once")
    llm = load_llm(args.model, engine_options(args), adapters)
    session = ChatSession(llm, params, args.system, next(iter(adapters), None))
    return session.run()


class ChatSession:
    def __init__(self, llm: Any, params: Any, system: str | None, adapter: str | None) -> None:
        from loomlm import AsyncLLM

        self.engine = AsyncLLM.from_engine(llm.engine)
        self.params = params
        self.adapter = adapter
        self.start = [{"role": "system", "content": system}] if system else []
        self.messages: list[dict[str, str]] = list(self.start)
        self.interactive = sys.stdin.isatty()
        self.failed = 0

    def run(self) -> int:
        loop = asyncio.new_event_loop()
        try:
            if self.interactive:
                print(f"loomlm chat ({COMMANDS})", file=sys.stderr)
            while (line := self._read()) is not None:
                text = line.strip()
                if not text:
                    continue
                if text in ("/exit", "/quit"):
                    break
                if text == "/reset":
                    self.messages = list(self.start)
                    self._note("(conversation reset)")
                    continue
                if text == "/help":
                    self._note(COMMANDS)
                    continue
                self._turn(loop, text)
        finally:
            loop.run_until_complete(self.engine.shutdown())
            loop.close()
        return FAILURE if self.failed else 0

    def _read(self) -> str | None:
        if self.interactive:
            try:
                return input("you> ")
            except EOFError:
                print(file=sys.stderr)
                return None
        line = sys.stdin.readline()
        return line if line else None

    def _note(self, text: str) -> None:
        print(text, file=sys.stderr)

    def _turn(self, loop: asyncio.AbstractEventLoop, text: str) -> None:
        self.messages.append({"role": "user", "content": text})
        task = loop.create_task(self._reply())
        try:
            reply, error, finish_reason = loop.run_until_complete(task)
        except KeyboardInterrupt:
            task.cancel()  # closes the stream, which aborts the request
            with contextlib.suppress(BaseException):
                loop.run_until_complete(task)
            write(sys.stdout, "\n")
            self._note("(reply interrupted)")
            self.messages.pop()
            return
        if error is not None:
            self.failed += 1
            self.messages.pop()  # the message that failed is not part of the conversation
            hint = "; /reset to start over" if len(self.messages) > len(self.start) else ""
            print(f"loomlm chat: error: {error}{hint}", file=sys.stderr)
            return
        self.messages.append({"role": "assistant", "content": reply})
        if finish_reason == "length":
            self._note(f"(reply cut at {self.params.max_tokens} tokens: --max-tokens)")

    async def _reply(self) -> tuple[str, str | None, str | None]:
        """Stream one reply to stdout; returns (text, error, finish reason)."""
        from loomlm import RequestError

        parts: list[str] = []
        finish_reason = error = None
        if self.interactive:
            write(sys.stdout, "assistant> ")
        try:
            stream = self.engine.chat_stream(list(self.messages), self.params, adapter=self.adapter)
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    if chunk.error is not None:
                        error = chunk.error
                        break
                    choice = chunk.choices[0]
                    if choice.content:
                        parts.append(choice.content)
                        write(sys.stdout, choice.content)
                    finish_reason = choice.finish_reason or finish_reason
        except RequestError as refused:  # at intake: too long for the context, a bad adapter
            error = str(refused)
        if error is None or parts or self.interactive:
            write(sys.stdout, "\n")  # end the reply's line (a partial one too)
        return "".join(parts), error, "error" if error is not None else finish_reason
