"""Runtime LoRA adapters: load and unload with the admin key only (the API key is not enough), paths
confined to adapter_dir (absolute paths, ``..`` and symlinks out of it refused), loads and unloads
of one name serialised, unknown names 404, and a loaded adapter served as a model."""

from __future__ import annotations

import asyncio
import os

import httpx
import openai
import pytest
from server_helpers import ADMIN_KEY, API_KEY, run

from loomlm import SamplingParams

CHAT = [{"role": "user", "content": "Hello there."}]


def load(http: httpx.Client, name: str, path: str) -> httpx.Response:
    return http.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path})


def unload(http: httpx.Client, name: str) -> httpx.Response:
    return http.post("/v1/unload_lora_adapter", json={"lora_name": name})


def test_load_serve_and_unload_an_adapter(server, client, llm, adapter_dirs):
    with server.http(ADMIN_KEY) as admin:
        loaded = load(admin, "runtime", "all8")  # relative to adapter_dir
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["lora_path"] == str(adapter_dirs["all8"].resolve())
        models = {m.id: m for m in client.models.list().data}
        assert models["runtime"].parent == "tiny" and models["runtime"].root == str(
            adapter_dirs["all8"].resolve()
        )
        answer = client.chat.completions.create(model="runtime", messages=CHAT, max_tokens=6, temperature=0)
        [expected] = run(llm.chat(CHAT, SamplingParams(temperature=0, max_tokens=6), adapter="runtime"))
        assert answer.choices[0].message.content == expected.outputs[0].text
        # Loading the name again replaces it (absolute paths under adapter_dir are fine).
        again = load(admin, "runtime", str(adapter_dirs["rs4"]))
        assert again.status_code == 200 and again.json()["replaced"] is True
        assert unload(admin, "runtime").status_code == 200
        gone = unload(admin, "runtime")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "adapter_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="runtime", messages=CHAT, max_tokens=2)
    assert "runtime" not in {m.id for m in client.models.list().data}


def test_the_adapter_routes_need_the_admin_key(server):
    with server.http(API_KEY) as api:
        refused = load(api, "x", "all8")
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
        assert unload(api, "ad1").status_code == 403
    for key in (None, "nope"):
        with server.http(key) as other:
            assert load(other, "x", "all8").status_code == 401
            assert unload(other, "ad1").status_code == 401


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink", "link-inside"])
def test_paths_out_of_adapter_dir_are_refused(server, adapter_dirs, where):
    root, outside = adapter_dirs["root"], adapter_dirs["outside"]
    if where == "absolute":
        path = str(outside)
    elif where == "dotdot":
        path = "all8/../../outside"
    elif where == "symlink":
        path = "escape"  # root/escape -> outside
    else:  # a directory inside whose weights file links out
        inner = root / "linked"
        if not inner.exists():
            inner.mkdir()
            for entry in outside.iterdir():
                os.symlink(entry, inner / entry.name)
        path = "linked"
    with server.http(ADMIN_KEY) as admin:
        refused = load(admin, "sneaky", path)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "path_outside_adapter_dir"


def test_bad_loads_are_400_and_the_base_name_is_reserved(server, adapter_dirs):
    (adapter_dirs["root"] / "empty").mkdir(exist_ok=True)
    with server.http(ADMIN_KEY) as admin:
        for name, path in [
            ("missing", "no-such-dir"),
            ("empty", "empty"),
            ("tiny", "all8"),
            ("bad name", "all8"),
        ]:
            response = load(admin, name, path)
            assert response.status_code == 400, (name, response.text)
        assert load(admin, "", "all8").status_code == 400  # pydantic: min_length
    assert "empty" not in {m["id"] for m in server.http().get("/v1/models").json()["data"]}


def test_concurrent_loads_and_unloads_of_one_name_keep_the_listing_true(server, llm):
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    async def main():
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as http:
            calls = []
            for i in range(10):
                if i % 3 == 2:
                    calls.append(http.post("/v1/unload_lora_adapter", json={"lora_name": "race"}))
                else:
                    path = "all8" if i % 2 else "rs4"
                    calls.append(
                        http.post("/v1/load_lora_adapter", json={"lora_name": "race", "lora_path": path})
                    )
            return await asyncio.gather(*calls)

    responses = asyncio.run(asyncio.wait_for(main(), 60))
    assert {r.status_code for r in responses} <= {200, 404} and responses[0].status_code == 200
    state = server.app.state.loomlm
    engine = {ref.name: ref.path for ref in run(llm.list_adapters())}
    assert state.adapters == engine
    if "race" in engine:
        with server.http(ADMIN_KEY) as admin:
            assert unload(admin, "race").status_code == 200


def test_without_adapter_loading_the_routes_do_not_exist(make_server, adapter_dirs):
    thread, _ = make_server()
    with thread.http(API_KEY) as http:
        assert load(http, "x", str(adapter_dirs["all8"])).status_code == 404
