"""``GET /v1/models`` (and ``/v1/models/{id}``), ``/health``, ``/version`` and ``/metrics``.

/health and /metrics need no key (probes and scrapers); /health is 200 only while the server takes
requests (every engine replica running), 503 while the model loads and once it drains. /metrics is
the engine's own Prometheus registry (vLLM's metric names under ``loomlm:``) followed by the
server's HTTP request counts; with several replicas, their registries merged family by family, each
series labelled ``engine="<replica>"``, plus the router's per-replica counts (``ReplicaMetrics``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import loomlm
from loomlm.server.errors import model_not_found
from loomlm.server.replica_metrics import ReplicaMetrics
from loomlm.server.state import ServerState

router = APIRouter()


def server_state(request: Request) -> ServerState:
    return request.app.state.loomlm


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = server_state(request)
    state.serving_replicas()
    await state.refresh_adapters()
    return {"object": "list", "data": _model_cards(state)}


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    state = server_state(request)
    state.serving_replicas()
    await state.resolve_model(model)
    for card in _model_cards(state):
        if card["id"] == model:
            return card
    raise model_not_found(model)


@router.get("/health")
async def health(request: Request) -> Response:
    status = server_state(request).health()
    return JSONResponse({"status": status}, 200 if status == "ok" else 503)


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": loomlm.__version__}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = server_state(request)
    parts = []
    registry = _engine_registry(state)
    if registry is not None:
        parts.append(generate_latest(registry))
    parts.append(generate_latest(request.app.state.http_metrics.registry))
    return Response(b"".join(parts), media_type=CONTENT_TYPE_LATEST)


def _engine_registry(state: ServerState) -> Any:
    """What to expose of the engines (None: nothing yet): one replica's registry as it is, or
    several replicas' merged."""
    replicas = state.replicas
    if replicas is None:
        return None
    registries = replicas.registries()
    if len(registries) == 1:
        return registries[0]
    return ReplicaMetrics(registries, replicas.router)


def _model_cards(state: ServerState) -> list[dict[str, Any]]:
    common = {"object": "model", "created": state.created, "owned_by": "loomlm"}
    max_len = state.limits.max_model_len
    cards = [
        {"id": state.base_name, **common, "root": state.model_root, "parent": None, "max_model_len": max_len}
    ]
    for name, path in sorted(state.adapters.items()):
        cards.append(
            {"id": name, **common, "root": path, "parent": state.base_name, "max_model_len": max_len}
        )
    return cards
