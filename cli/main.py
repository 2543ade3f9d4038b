"""``loomlm``: the command line. One subcommand per module (serve, generate, chat, extract, bench),
each with ``add_parser(subparsers)`` and ``run(args) -> exit code``.

Exit codes: 0 success, 1 the work failed (a request error, an extraction that did not validate, an
unexpected error), 2 bad usage or input (argparse errors, bad option values, a model directory or
schema file that is not one), 130 interrupted."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence

from loomlm.cli import bench, chat, extract, generate, serve
from loomlm.cli.common import FAILURE, CliError, setup_logging

SUBCOMMANDS = (serve, generate, chat, extract, bench)

EPILOG = """\
examples:
  loomlm generate "The capital of France is" --temperature 0 --max-tokens 16
  loomlm chat --system "You are terse."
  loomlm extract --schema person.json "John Smith is 42 and lives in Boston."
  loomlm serve /models/llama --port 8000 --adapter sql=/adapters/sql
  loomlm bench --num-prompts 64 --input-len 128 --output-len 64 --plot latency.png

Every command takes --model DIR (a local Hugging Face checkpoint; default: the embedded
SmolLM2-135M-Instruct) and the engine options; see `loomlm COMMAND --help`.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description and epilog as written and appends ``(default: X)`` to options that
    take a value whose default is a real one (not None, and not already in the help text)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        default = action.default
        if (
            help_text
            and "default" not in help_text
            and not (default is None or default is False or default is argparse.SUPPRESS)
            and action.nargs != 0  # flags: their default is just "not given"
            and (action.option_strings or action.nargs in ("?", "*"))
        ):
            help_text += " (default: %(default)s)"
        return help_text


def version() -> str:
    try:
        return importlib.metadata.version("loomlm")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        from loomlm import __version__

        return __version__


def add_common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if top else argparse.SUPPRESS,
        help="log what loomlm does on stderr: -v INFO, -vv DEBUG",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loomlm",
        description="loomlm: typed structured generation with many LoRA adapters in one batch, "
        "on a paged-KV continuous-batching engine.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"loomlm {version()}")
    add_common_options(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    subparsers.required = True
    for module in SUBCOMMANDS:
        sub = module.add_parser(subparsers, HelpFormatter)
        add_common_options(sub, top=False)
        sub.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse's own exits included)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version (0) and usage errors (2, message printed)
        return exit_.code if isinstance(exit_.code, int) else FAILURE
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except CliError as error:
        print(f"loomlm {args.command}: error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print(f"loomlm {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `loomlm generate ... | head`: the reader left
        _silence_stdout()
        return FAILURE
    except Exception as error:  # a bug, not the user's: one line, the traceback with -v
        hint = "" if args.verbose else " (run with -v for the traceback)"
        print(
            f"loomlm {args.command}: internal error: {type(error).__name__}: {error}{hint}", file=sys.stderr
        )
        if args.verbose:
            import traceback

            traceback.print_exc()
        return FAILURE


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured output)
        pass


if __name__ == "__main__":
    sys.exit(main())
