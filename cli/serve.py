"""``loomlm serve``: the OpenAI-compatible HTTP server (``loomlm.server``).

The command only builds a ``loomlm.server.ServerConfig`` from its options and hands it to
``loomlm.server.run_server``, which loads the model, serves until SIGINT/SIGTERM and drains. The
server package is imported when the command runs, so the other commands never need it."""

from __future__ import annotations

import argparse
import os
from typing import Any

from loomlm.cli.common import CliError, adapters_dict
from loomlm.cli.options import add_adapter_option, add_engine_options, engine_options, positive_int

# The router's names, repeated so that --help needs no server import (tests/cli checks they agree).
ROUTING_POLICIES = ("affinity", "round_robin")
DEFAULT_MAX_IMBALANCE = 4

API_KEY_ENV = "LOOMLM_API_KEY"
ADMIN_KEY_ENV = "LOOMLM_ADMIN_KEY"
SHUTDOWN_TIMEOUT_S = 30.0  # ServerConfig's default, shown in --help

DESCRIPTION = """\
Serve a model over HTTP with the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models,
structured output, LoRA adapters as model names) plus health and metrics endpoints. Requests
from all clients share one continuously batched engine, or with --data-parallel-size N one of N
engine replicas, routed by adapter and prompt-prefix affinity. Ctrl-C or SIGTERM stops admitting
new requests and lets those in flight finish for up to --shutdown-timeout seconds."""

EPILOG = """\
examples:
  loomlm serve                                   # the default SmolLM2-135M-Instruct on 127.0.0.1:8000
  loomlm serve /models/llama --host 0.0.0.0 --port 8080 --api-key "$KEY"
  loomlm serve /models/llama --adapter sql=/adapters/sql --adapter chat=/adapters/chat --max-loras 4
  loomlm serve --adapter-dir /adapters --enable-adapter-loading --admin-key "$ADMIN_KEY"
  loomlm serve /models/llama --data-parallel-size 2 --adapter sql=/adapters/sql   # two replicas

environment:
  LOOMLM_API_KEY    the API key when --api-key is not given
  LOOMLM_ADMIN_KEY  the admin key when --admin-key is not given
  LOOMLM_CACHE      cache root (converted default model, compiled grammars)
"""


def add_parser(subparsers: Any, formatter: type[argparse.HelpFormatter]) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible HTTP server",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=formatter,
    )
    p.add_argument(
        "model_arg",
        nargs="?",
        metavar="MODEL",
        help="local Hugging Face checkpoint directory (default: the embedded SmolLM2-135M-Instruct)",
    )
    p.add_argument("-m", "--model", metavar="DIR", help="the same as MODEL")
    p.add_argument(
        "--served-model-name",
        metavar="NAME",
        help="the base model's name in the API (default: the model directory's name)",
    )
    g = p.add_argument_group("HTTP")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for all interfaces")
    g.add_argument("--port", type=int, default=8000, help="port to listen on")
    g.add_argument(
        "--api-key",
        metavar="KEY",
        help="clients must send 'Authorization: Bearer KEY' (default: $LOOMLM_API_KEY, else none)",
    )
    g.add_argument(
        "--admin-key",
        metavar="KEY",
        help="key of the admin routes (runtime adapter loading); must differ from the API key "
        "(default: $LOOMLM_ADMIN_KEY)",
    )
    g.add_argument(
        "--max-waiting",
        type=positive_int,
        metavar="N",
        help="most requests queued in the engine; more get HTTP 429 (default: unbounded)",
    )
    g.add_argument(
        "--shutdown-timeout",
        type=float,
        metavar="S",
        help=f"seconds requests in flight may take to finish on shutdown (default: {SHUTDOWN_TIMEOUT_S:g})",
    )
    g = p.add_argument_group("adapters")
    add_adapter_option(g, "serve a PEFT LoRA adapter directory under NAME (repeatable)")
    g.add_argument(
        "--adapter-dir", metavar="DIR", help="runtime adapter loads read only from under this folder"
    )
    g.add_argument(
        "--enable-adapter-loading",
        action="store_true",
        help="let admin clients load and unload adapters at run time (needs --adapter-dir, --admin-key)",
    )
    _add_parallel_options(p)
    p.add_argument("--seed", type=int, metavar="S", help="engine seed for requests that give none")
    add_engine_options(p)
    return p


def _add_parallel_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("parallelism (see docs/parallelism.md)")
    g.add_argument(
        "--data-parallel-size",
        type=positive_int,
        metavar="N",
        help="engine replicas behind this server, each a full copy of the model and its KV cache "
        "(default: 1)",
    )
    g.add_argument(
        "--dp-routing",
        choices=ROUTING_POLICIES,
        help="how a request picks its replica: affinity (same adapter, same prompt prefix, else least "
        "loaded; bounded imbalance) or round_robin (default: affinity)",
    )
    g.add_argument(
        "--dp-max-imbalance",
        type=non_negative_int,
        metavar="N",
        help="requests in flight a preferred replica may have beyond the least-loaded one before "
        f"affinity gives way (default: {DEFAULT_MAX_IMBALANCE})",
    )
    g.add_argument(
        "--tensor-parallel-size",
        type=positive_int,
        metavar="N",
        help="devices one engine's model is split over (default: 1)",
    )
    g.add_argument(
        "--distributed-executor-backend",
        choices=("uni", "mp"),
        help="how a tensor-parallel engine runs its workers: uni (one process) or mp (a process per device)",
    )


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def server_config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ServerConfig`` keyword arguments. ``ServerConfig`` checks the values (ports, names,
    directories, keys); options not given are left to its defaults, keys to the environment."""
    if args.model_arg and args.model and args.model_arg != args.model:
        raise CliError(f"two models given: {args.model_arg!r} and --model {args.model!r}")
    options = engine_options(args)
    if args.seed is not None:
        options["seed"] = args.seed
    # Passed on only when given, so that an engine without these options still serves: a tensor
    # parallel size of 1 is what every engine does anyway.
    if args.tensor_parallel_size not in (None, 1):
        options["tensor_parallel_size"] = args.tensor_parallel_size
    if args.distributed_executor_backend is not None:
        options["distributed_executor_backend"] = args.distributed_executor_backend
    kwargs: dict[str, Any] = {
        "model": args.model_arg or args.model,
        "host": args.host,
        "port": args.port,
        "api_key": args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None,
        "admin_key": args.admin_key if args.admin_key is not None else os.environ.get(ADMIN_KEY_ENV) or None,
        "adapters": adapters_dict(args.adapter),
        "enable_adapter_loading": args.enable_adapter_loading,
        "engine_options": options,  # LoRA is switched on by the server when adapters are served
    }
    optional = {
        "served_model_name": args.served_model_name,
        "adapter_dir": args.adapter_dir,
        "max_waiting": args.max_waiting,
        "shutdown_timeout": args.shutdown_timeout,
        "data_parallel_size": args.data_parallel_size,
        "routing": args.dp_routing,
        "routing_max_imbalance": args.dp_max_imbalance,
    }
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    return kwargs


def server_module() -> Any:
    """What the command needs of ``loomlm.server`` (FastAPI and uvicorn are imported only here)."""
    try:
        import loomlm.server as server

        if hasattr(server, "ServerConfig") and hasattr(server, "run_server"):
            return server
        from loomlm.server.config import ServerConfig
        from loomlm.server.run import run_server
    except ImportError as error:
        raise CliError(f"the server is not available: {error}", code=1) from None
    return argparse.Namespace(ServerConfig=ServerConfig, run_server=run_server)


def run(args: argparse.Namespace) -> int:
    kwargs = server_config_kwargs(args)
    server = server_module()
    try:
        config = server.ServerConfig(**kwargs)
    except ValueError as error:  # the server's own checks of the values
        raise CliError(
            str(error).strip().splitlines()[0] if str(error).strip() else "bad server option"
        ) from None
    return int(server.run_server(config) or 0)
