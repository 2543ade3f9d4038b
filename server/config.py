"""ServerConfig: everything ``loomlm serve`` (and ``run_server``) needs, checked when it is built, so
a bad flag fails with a message that says what to change before any model is loaded."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loomlm.server.router import DEFAULT_MAX_IMBALANCE, ROUTING_POLICIES

# What a client may name a model or an adapter: OpenAI-style ids (``org/name``, ``ft:base:suffix``)
# without whitespace or control characters.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
API_KEY_ENV = "LOOMLM_API_KEY"
ADMIN_KEY_ENV = "LOOMLM_ADMIN_KEY"
# AsyncLLM takes these from their own fields; in engine_options they would be ambiguous.
_OWN_FIELDS = {"model": "model", "max_waiting": "max_waiting"}


@dataclass(slots=True)
class ServerConfig:
    """How to serve one model (and its LoRA adapters) over the OpenAI API.

    ``api_key`` guards every route but /health and /metrics; ``admin_key`` guards the runtime
    adapter routes, which exist only with ``enable_adapter_loading`` and load only from under
    ``adapter_dir``. Both keys default to the environment (``LOOMLM_API_KEY``, ``LOOMLM_ADMIN_KEY``)
    so that they need not appear on a command line. ``data_parallel_size`` engine replicas (each a
    full AsyncLLM) serve behind the one HTTP front end; ``routing`` says how a request picks one."""

    model: str | None = None  # model dir; None = the default SmolLM2-135M-Instruct
    served_model_name: str | None = None  # the base model's name for clients; default: the dir's name
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # default from env LOOMLM_API_KEY
    admin_key: str | None = None  # default from env LOOMLM_ADMIN_KEY; required by enable_adapter_loading
    adapters: dict[str, str] = field(default_factory=dict)  # name -> path, loaded at startup
    adapter_dir: str | None = None  # runtime loads only from under here
    enable_adapter_loading: bool = False
    max_waiting: int | None = None  # waiting-queue bound -> HTTP 429
    shutdown_timeout: float = 30.0  # SIGTERM: finish in-flight requests up to this, abort the rest
    max_request_bytes: int = 4 << 20  # request body bound -> 413
    engine_options: dict[str, Any] = field(default_factory=dict)  # AsyncLLM(**engine_options)
    # Data parallel: this many engine replicas (AsyncLLMs, the same engine_options) behind one server.
    data_parallel_size: int = 1
    routing: str = "affinity"  # how a request picks its replica: "affinity" or "round_robin"
    # affinity gives way when the preferred replica has more than this many requests in flight
    # beyond the least-loaded one (see server/router.py for why this default).
    routing_max_imbalance: int = DEFAULT_MAX_IMBALANCE

    def __post_init__(self) -> None:
        self.api_key = _key(self.api_key, API_KEY_ENV, "api_key")
        self.admin_key = _key(self.admin_key, ADMIN_KEY_ENV, "admin_key")
        _check(
            isinstance(self.host, str) and self.host != "",
            f"host must be a non-empty string, got {self.host!r}",
        )
        _check(
            isinstance(self.port, int) and not isinstance(self.port, bool) and 0 <= self.port <= 65535,
            f"port must be an integer in [0, 65535] (0: any free port), got {self.port!r}",
        )
        if self.served_model_name is not None:
            check_model_name(self.served_model_name, "served_model_name")
        self._check_adapters()
        self._check_adapter_loading()
        _check(
            self.max_waiting is None
            or (
                isinstance(self.max_waiting, int)
                and not isinstance(self.max_waiting, bool)
                and self.max_waiting >= 1
            ),
            f"max_waiting must be a positive integer (requests beyond it get HTTP 429) or None for an "
            f"unbounded queue, got {self.max_waiting!r}",
        )
        _check(
            isinstance(self.shutdown_timeout, int | float)
            and math.isfinite(self.shutdown_timeout)
            and self.shutdown_timeout >= 0,
            f"shutdown_timeout must be a finite number of seconds >= 0, got {self.shutdown_timeout!r}",
        )
        _check(
            isinstance(self.max_request_bytes, int) and self.max_request_bytes >= 1024,
            f"max_request_bytes must be an integer >= 1024, got {self.max_request_bytes!r}",
        )
        self._check_engine_options()
        self._check_data_parallel()

    def _check_data_parallel(self) -> None:
        _check(
            _is_int(self.data_parallel_size) and self.data_parallel_size >= 1,
            f"data_parallel_size must be an integer >= 1 (the number of engine replicas, each a full "
            f"copy of the model and its KV cache: size it by memory), got {self.data_parallel_size!r}",
        )
        _check(
            self.routing in ROUTING_POLICIES,
            f"routing must be one of {', '.join(ROUTING_POLICIES)} (affinity: adapter and prefix "
            f"affinity with a load bound; round_robin: in turn), got {self.routing!r}",
        )
        _check(
            _is_int(self.routing_max_imbalance) and self.routing_max_imbalance >= 0,
            "routing_max_imbalance must be an integer >= 0 (requests in flight a preferred replica may "
            f"have beyond the least-loaded one), got {self.routing_max_imbalance!r}",
        )

    def _check_adapters(self) -> None:
        _check(isinstance(self.adapters, dict), "adapters must be a dict of name -> adapter directory")
        for name, path in self.adapters.items():
            check_model_name(name, "adapter name")
            _check(
                name != self.served_model_name,
                f"adapter {name!r} has the base model's served name; rename it (--adapter other={path})",
            )
            _check(
                isinstance(path, str | os.PathLike) and Path(path).expanduser().is_dir(),
                f"adapter {name!r}: {path!r} is not a directory (a PEFT adapter directory holding "
                "adapter_config.json and the adapter weights)",
            )

    def _check_adapter_loading(self) -> None:
        if self.adapter_dir is not None:
            _check(
                Path(self.adapter_dir).expanduser().is_dir(),
                f"adapter_dir {self.adapter_dir!r} is not a directory",
            )
        if not self.enable_adapter_loading:
            return
        _check(
            self.admin_key is not None,
            f"enable_adapter_loading needs an admin key (admin_key, or the {ADMIN_KEY_ENV} environment "
            "variable): runtime adapter loads read files on the server",
        )
        _check(
            self.adapter_dir is not None,
            "enable_adapter_loading needs adapter_dir: runtime loads read only from under that directory",
        )
        _check(
            self.admin_key != self.api_key,
            "admin_key must differ from api_key: API clients must not be able to load adapters",
        )

    def _check_engine_options(self) -> None:
        _check(isinstance(self.engine_options, dict), "engine_options must be a dict of AsyncLLM options")
        for key, own in _OWN_FIELDS.items():
            _check(key not in self.engine_options, f"set {own} on ServerConfig, not in engine_options")
        if (self.adapters or self.enable_adapter_loading) and self.engine_options.get("enable_lora") is False:
            raise ValueError("adapters need LoRA: drop enable_lora=False from engine_options")
        if self.engine_options:
            import inspect

            from loomlm.llm import LLM  # here: the options are checked only when there are some

            known = set(inspect.signature(LLM.__init__).parameters) - {"self", "model"}
            unknown = sorted(set(self.engine_options) - known)
            _check(not unknown, f"unknown engine options {unknown}; known: {sorted(known)}")

    def engine_kwargs(self) -> dict[str, Any]:
        """AsyncLLM's keyword arguments: LoRA is switched on when adapters are to be served."""
        options = dict(self.engine_options)
        lora_keys = ("enable_lora", "max_loras", "max_lora_rank", "max_cpu_loras")
        if (self.adapters or self.enable_adapter_loading) and not any(k in options for k in lora_keys):
            options["enable_lora"] = True
        return {"max_waiting": self.max_waiting, **options}


def check_model_name(name: Any, what: str) -> None:
    _check(
        isinstance(name, str) and MODEL_NAME.fullmatch(name) is not None,
        f"{what} {name!r} is invalid: use 1 to 128 of letters, digits and . _ : / @ + - "
        "(starting with a letter or digit)",
    )


def _key(value: str | None, env: str, what: str) -> str | None:
    if value is None:
        value = os.environ.get(env) or None  # an empty variable means unset
    elif not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string; omit it (and unset {env}) to serve without one")
    if value is not None and value != value.strip():
        raise ValueError(f"{what} has leading or trailing whitespace; check how it was quoted")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
