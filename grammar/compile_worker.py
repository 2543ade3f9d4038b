"""Grammar compile worker: a separate process that turns regexes into outlines-core Indexes.

Run as a script (``python compile_worker.py``), never imported through the ``loomlm`` package, so
the child starts in ~0.1 s without torch and never re-runs the user's ``__main__``. Compiling in a
process is what makes the compiler's time and memory limits real: a runaway DFA construction is
killed, not waited for. Protocol over stdin/stdout, each message a length-prefixed pickle:
the parent first sends ``(eos_token_id, {token_bytes: [ids]}, memory_limit_bytes)``, then one regex
per job; the worker answers ``("ok", index)`` or ``("error", message)``."""

from __future__ import annotations

import pickle
import struct
import sys
from typing import Any, BinaryIO

_HEADER = struct.Struct("<Q")


def write_message(stream: BinaryIO, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def read_message(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the compile worker closed its pipe")
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError("the compile worker closed its pipe mid-message")
    return pickle.loads(payload)


def _limit_memory(limit_bytes: int | None) -> None:
    if not limit_bytes:
        return
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    except (ImportError, ValueError, OSError):
        pass  # not enforceable on this platform; the time limit still applies


def main() -> None:
    from outlines_core import Index, Vocabulary

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    eos_token_id, tokens, memory_limit = read_message(stdin)
    vocabulary = Vocabulary(eos_token_id, tokens)
    _limit_memory(memory_limit)
    write_message(stdout, ("ready", None))
    while True:
        try:
            regex = read_message(stdin)
        except EOFError:
            return
        try:
            write_message(stdout, ("ok", Index(regex, vocabulary)))
        except MemoryError:
            write_message(stdout, ("error", "the automaton outgrew the compile memory limit"))
        except Exception as error:  # every compile failure is reported to the caller, not fatal here
            write_message(stdout, ("error", f"{type(error).__name__}: {error}"))


if __name__ == "__main__":
    main()
