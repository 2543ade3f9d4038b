"""The sampling options shared by the generating commands (-> ``SamplingParams``).

Options left out are not passed on, so ``SamplingParams``' own defaults apply; the defaults printed
by ``--help`` are those defaults (``tests/cli`` checks them)."""

from __future__ import annotations

import argparse
from typing import Any

from loomlm.cli.common import CliError, validation_message

# ``SamplingParams`` defaults shown in --help.
SAMPLING_DEFAULTS: dict[str, Any] = {
    "max_tokens": 256,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "min_tokens": 0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "n": 1,
}


def add_sampling_options(parser: argparse.ArgumentParser, *, n: bool = True) -> None:
    """The ``SamplingParams`` options (``n``: with ``--n``), all defaulting to "not given"."""
    g = parser.add_argument_group("sampling options")
    d = SAMPLING_DEFAULTS
    g.add_argument(
        "--max-tokens", type=int, metavar="N", help=f"most tokens to generate (default: {d['max_tokens']})"
    )
    g.add_argument(
        "--temperature", type=float, metavar="T", help=f"0 is greedy decoding (default: {d['temperature']})"
    )
    g.add_argument("--top-p", type=float, metavar="P", help=f"nucleus sampling mass (default: {d['top_p']})")
    g.add_argument(
        "--top-k",
        type=int,
        metavar="K",
        help=f"keep the K most likely tokens, 0: all (default: {d['top_k']})",
    )
    g.add_argument(
        "--min-p",
        type=float,
        metavar="P",
        help=f"drop tokens below P x the top probability (default: {d['min_p']})",
    )
    g.add_argument(
        "--seed", type=int, metavar="S", help="sampling seed, for reproducible output (default: none)"
    )
    if n:
        g.add_argument("-n", "--n", type=int, metavar="N", help=f"completions per prompt (default: {d['n']})")
    g.add_argument("--stop", action="append", metavar="TEXT", help="stop at this string (repeatable)")
    g.add_argument(
        "--min-tokens",
        type=int,
        metavar="N",
        help=f"tokens before EOS or a stop may end the output (default: {d['min_tokens']})",
    )
    g.add_argument("--ignore-eos", action="store_true", default=None, help="keep generating past EOS")
    g.add_argument(
        "--repetition-penalty",
        type=float,
        metavar="X",
        help=f"above 1 discourages tokens already seen (default: {d['repetition_penalty']})",
    )
    g.add_argument(
        "--presence-penalty",
        type=float,
        metavar="X",
        help=f"above 0 discourages tokens already generated (default: {d['presence_penalty']})",
    )
    g.add_argument(
        "--frequency-penalty",
        type=float,
        metavar="X",
        help=f"above 0 discourages tokens by their count (default: {d['frequency_penalty']})",
    )


SAMPLING_KEYS = tuple(SAMPLING_DEFAULTS) + ("seed", "stop", "ignore_eos")


def sampling_params(args: argparse.Namespace):
    """A validated ``SamplingParams`` from the options given (a bad value is a ``CliError``)."""
    import pydantic

    from loomlm import SamplingParams

    values = {k: getattr(args, k) for k in SAMPLING_KEYS if getattr(args, k, None) is not None}
    try:
        return SamplingParams(**values)
    except pydantic.ValidationError as error:
        raise CliError(f"bad sampling option: {validation_message(error)}") from None
