"""CompileWorker: the parent-side handle of one compile worker process, with a hard time limit.

A job that runs past its limit gets the process killed (and a fresh one started for the next job),
so a pathological regex costs one worker restart, never a stuck thread or the engine's memory."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loomlm.grammar.compile_worker import read_message, write_message
from loomlm.grammar.errors import GrammarCompileError, GrammarError, InvalidRegexError

_WORKER_SCRIPT = Path(__file__).with_name("compile_worker.py")
_STARTUP_TIMEOUT_S = 60.0


class CompileWorker:
    """One worker process, used by one compile thread at a time."""

    def __init__(
        self, eos_token_id: int, tokens: dict[bytes, list[int]], memory_limit_bytes: int | None
    ) -> None:
        self._handshake = (eos_token_id, tokens, memory_limit_bytes)
        self._process: subprocess.Popen | None = None

    def compile(self, regex: str, timeout_s: float) -> Any:
        """The outlines-core Index for ``regex``; raises GrammarCompileError on failure or timeout."""
        process = self._ensure_started()
        write_message(process.stdin, regex)
        if not _wait_readable(process.stdout, timeout_s):
            self.close()
            raise GrammarCompileError(
                f"compiling the grammar took longer than {timeout_s:g} s and was stopped; simplify the "
                "schema or regex (bounded lengths and repetitions compile to large automata) or raise "
                "compile_timeout_s"
            )
        try:
            status, payload = read_message(process.stdout)
        except EOFError:
            self.close()
            raise GrammarCompileError(
                "the grammar compile worker died, most likely by exceeding its memory limit; simplify "
                "the schema or regex or raise compile_memory_limit_bytes"
            ) from None
        if status != "ok":
            raise _compile_error(regex, payload)
        return payload

    def _ensure_started(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        process = subprocess.Popen(
            [sys.executable, "-I", str(_WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        self._process = process
        write_message(process.stdin, self._handshake)
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        if not _wait_readable(process.stdout, deadline - time.monotonic()):
            self.close()
            raise GrammarCompileError("the grammar compile worker did not start")
        try:
            status, _ = read_message(process.stdout)
        except EOFError:
            self.close()
            raise GrammarCompileError(
                "the grammar compile worker failed to start (is outlines-core installed?)"
            ) from None
        if status != "ready":
            self.close()
            raise GrammarCompileError(f"unexpected reply from the compile worker: {status!r}")
        return process

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):
                stream.close()


def _wait_readable(stream: Any, timeout_s: float) -> bool:
    readable, _, _ = select.select([stream], [], [], max(timeout_s, 0.0))
    return bool(readable)


def _compile_error(regex: str, message: str) -> GrammarError:
    shown = regex if len(regex) <= 120 else regex[:117] + "..."
    if "NFA" in message or "parse" in message.lower():
        return InvalidRegexError(
            f"the regex {shown!r} does not parse (Rust regex syntax: no lookaround or backreferences): "
            f"{message}"
        )
    if "incompatible with the regex" in message:
        return InvalidRegexError(
            f"no text the model's vocabulary can spell matches the regex {shown!r} "
            f"(it may be unsatisfiable): {message}"
        )
    return GrammarCompileError(f"the grammar could not be compiled: {message}")
