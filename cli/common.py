"""What every subcommand shares: the user-error type, logging setup, model loading and small I/O
helpers. User errors are ``CliError``s: ``main`` prints their one-line message and exits with
their code (2 for bad input), never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import pydantic

USAGE_ERROR = 2  # argparse's own exit code for bad arguments; also bad input files and values
FAILURE = 1  # the work ran and failed (a request error, an extraction that did not validate)

_LOG_HANDLER_NAME = "loomlm-cli"


class CliError(Exception):
    """A user-facing error: ``main`` prints ``loomlm: error: <message>`` and returns ``code``."""

    def __init__(self, message: str, code: int = USAGE_ERROR) -> None:
        super().__init__(message)
        self.code = code


def setup_logging(verbosity: int) -> None:
    """``-v``: INFO records of the ``loomlm`` logger on stderr; ``-vv``: DEBUG. Only loomlm's logger
    is configured (not the root), so other libraries stay quiet. Calling again replaces the handler."""
    logger = logging.getLogger("loomlm")
    for handler in [h for h in logger.handlers if h.get_name() == _LOG_HANDLER_NAME]:
        logger.removeHandler(handler)
    if verbosity <= 0:
        logger.setLevel(logging.NOTSET)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_LOG_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)


def validation_message(error: pydantic.ValidationError) -> str:
    """A pydantic error on one line: ``field: problem; field: problem``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()))
        message = item.get("msg", "invalid value").removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or str(error).splitlines()[0]


def parse_adapter(text: str) -> tuple[str, str]:
    """``--adapter name=path`` -> (name, path); an argparse ``type``."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name.strip(), path.strip()


def adapters_dict(pairs: Sequence[tuple[str, str]] | None) -> dict[str, str]:
    """Repeated ``--adapter`` values as {name: path}; a name given twice is a usage error."""
    adapters: dict[str, str] = {}
    for name, path in pairs or ():
        if name in adapters:
            raise CliError(f"adapter name {name!r} is given twice (--adapter)")
        adapters[name] = path
    return adapters


def read_text(value: str, what: str, stdin: TextIO | None = None) -> str:
    """A text argument, or all of stdin for ``-`` (one trailing newline dropped)."""
    if value != "-":
        return value
    text = (stdin or sys.stdin).read()
    if text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        raise CliError(f"{what} read from stdin is empty")
    return text


def load_llm(model: str | None, engine_options: dict[str, Any], adapters: dict[str, str] | None = None):
    """An ``LLM`` with its adapters loaded. Bad options, a model directory that is not one and an
    adapter that does not fit the model are usage errors (``CliError``, exit code 2)."""
    from loomlm import LLM, AdapterError

    options = dict(engine_options)
    if adapters:
        options.setdefault("enable_lora", True)
    logging.getLogger("loomlm.cli").info("loading model %s", model or "(default SmolLM2-135M-Instruct)")
    try:
        llm = LLM(model, **options)
    except (ValueError, OSError) as error:  # ModelNotFoundError and config checks are ValueErrors
        raise CliError(_first_line(error)) from None
    for name, path in (adapters or {}).items():
        try:
            llm.load_adapter(name, path)
        except (AdapterError, ValueError, OSError) as error:
            llm.engine.close()
            raise CliError(f"adapter {name!r} ({path}): {_first_line(error)}") from None
    return llm


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if "\n" not in text else text.splitlines()[0]


@contextlib.contextmanager
def closing_engine(llm: Any) -> Iterator[Any]:
    """Close the engine's grammar workers when the command is done with it."""
    try:
        yield llm
    finally:
        with contextlib.suppress(Exception):
            llm.engine.close()


def write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()
