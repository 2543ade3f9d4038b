"""Runtime LoRA adapters, vLLM's routes: ``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path"}``
and ``POST /v1/unload_lora_adapter`` ``{"lora_name"}``. Mounted only with
``enable_adapter_loading``; the admin key guards them (``AuthMiddleware``).

A load reads files on the server, so ``lora_path`` (relative to ``adapter_dir``, or absolute) must
resolve, symlinks and ``..`` included, to a directory under ``adapter_dir``, and so must every entry
in it (a link inside the directory cannot point out either); otherwise 403. Loads and unloads of one
name are serialised by a per-name lock, so the listed adapters follow the engine's. Loading a name
again replaces it for new requests (requests already running keep the weights they started with).
With several engine replicas a load or unload reaches every replica, and an error is reported once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from loomlm.adapters.errors import AdapterError
from loomlm.server.config import check_model_name
from loomlm.server.errors import APIError, api_error, bad_request
from loomlm.server.protocol import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest
from loomlm.server.state import ServerState

LOAD_PATH = "/v1/load_lora_adapter"
UNLOAD_PATH = "/v1/unload_lora_adapter"
router = APIRouter()


def server_state(request: Request) -> ServerState:
    return request.app.state.loomlm


@router.post(LOAD_PATH)
async def load_lora_adapter(body: LoadLoRAAdapterRequest, request: Request) -> dict[str, Any]:
    state = server_state(request)
    replicas = state.serving_replicas()
    name = _adapter_name(body.lora_name, state)
    if name == state.base_name:
        raise bad_request(f"{name!r} is the base model's name; choose another lora_name", "lora_name")
    assert state.config.adapter_dir is not None  # ServerConfig requires it with adapter loading
    path = resolve_adapter_path(body.lora_path, state.config.adapter_dir)
    async with state.adapter_lock(name):
        try:
            ref = await replicas.load_adapter(name, str(path))
        except (AdapterError, ValueError) as error:
            raise api_error(error) from None
        replaced = name in state.adapters
        state.adapters[name] = ref.path
    return {"object": "lora_adapter", "lora_name": name, "lora_path": ref.path, "replaced": replaced}


@router.post(UNLOAD_PATH)
async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, request: Request) -> dict[str, Any]:
    state = server_state(request)
    replicas = state.serving_replicas()
    name = _adapter_name(body.lora_name, state)
    async with state.adapter_lock(name):
        if name not in state.adapters:
            await state.refresh_adapters()
        if name not in state.adapters:
            raise _not_loaded(name)
        try:
            await replicas.unload_adapter(name)
        except AdapterError:  # unloaded straight through the AsyncLLM meanwhile
            raise _not_loaded(name) from None
        finally:
            await state.refresh_adapters()
    return {"object": "lora_adapter", "lora_name": name, "unloaded": True}


def resolve_adapter_path(lora_path: str, adapter_dir: str) -> Path:
    """The adapter directory ``lora_path`` names, fully resolved; 403 unless it and everything in
    it lie under ``adapter_dir`` (resolved too), 400 if it is not a directory."""
    root = Path(adapter_dir).expanduser().resolve()
    raw = Path(lora_path).expanduser()
    path = (raw if raw.is_absolute() else root / raw).resolve()
    if not path.is_relative_to(root):
        raise _outside(lora_path)
    if not path.is_dir():
        raise bad_request(f"lora_path {lora_path!r} is not a directory under adapter_dir", "lora_path")
    for entry in path.iterdir():
        if not entry.resolve().is_relative_to(root):
            raise _outside(lora_path, f" ({entry.name} links out of it)")
    return path


def _adapter_name(name: str, state: ServerState) -> str:
    try:
        check_model_name(name, "lora_name")
    except ValueError as error:
        raise bad_request(str(error), "lora_name") from None
    return name


def _outside(lora_path: str, detail: str = "") -> APIError:
    return APIError(
        403, f"lora_path {lora_path!r} is outside the server's adapter directory{detail}",
        type="permission_error", param="lora_path", code="path_outside_adapter_dir",
    )  # fmt: skip


def _not_loaded(name: str) -> APIError:
    return APIError(404, f"no adapter named {name!r} is loaded", param="lora_name", code="adapter_not_found")
