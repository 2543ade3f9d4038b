"""``loomlm serve``: the options become a ``ServerConfig`` (the server's real one), handed to
``run_server`` (replaced here: no HTTP) whose return value is the exit code; the keys default to
the environment; values the server refuses are exit code 2 with its message."""

from __future__ import annotations

import argparse

import pytest

from loomlm.cli import serve
from loomlm.cli.main import main


@pytest.fixture
def served(monkeypatch):
    """Replace run_server; ``served`` lists the ServerConfigs it got. Returns exit code 0."""
    from loomlm.server.config import ServerConfig

    got: list = []

    def run_server(config) -> int:
        got.append(config)
        return 0

    monkeypatch.setattr(
        serve, "server_module", lambda: argparse.Namespace(ServerConfig=ServerConfig, run_server=run_server)
    )
    monkeypatch.delenv("LOOMLM_API_KEY", raising=False)
    monkeypatch.delenv("LOOMLM_ADMIN_KEY", raising=False)
    return got


def test_options_become_the_server_config(served, tmp_path):
    sql, chat, root = tmp_path / "sql", tmp_path / "chat", tmp_path / "adapters"
    for folder in (sql, chat, root):
        folder.mkdir()
    argv = [
        "serve", "/models/llama", "--host", "0.0.0.0", "--port", "9001", "--served-model-name", "llama-7b",
        "--api-key", "secret", "--admin-key", "admin", "--adapter", f"sql={sql}", "--adapter", f"chat={chat}",
        "--adapter-dir", str(root), "--enable-adapter-loading", "--max-waiting", "32",
        "--shutdown-timeout", "5",
        "--max-num-seqs", "8", "--kv-cache-bytes", "64M", "--kv-cache-dtype", "bfloat16",
        "--no-prefix-caching", "--dtype", "bfloat16", "--grammar-backend", "outlines", "--max-loras", "2",
        "--seed", "3",
    ]  # fmt: skip
    assert main(argv) == 0
    (config,) = served
    assert (config.model, config.served_model_name, config.host, config.port) == (
        "/models/llama", "llama-7b", "0.0.0.0", 9001,
    )  # fmt: skip
    assert (config.api_key, config.admin_key) == ("secret", "admin")
    assert config.adapters == {"sql": str(sql), "chat": str(chat)}
    assert (config.adapter_dir, config.enable_adapter_loading) == (str(root), True)
    assert (config.max_waiting, config.shutdown_timeout) == (32, 5.0)
    assert config.engine_options == {
        "max_num_seqs": 8,
        "kv_cache_bytes": 64 << 20,
        "kv_cache_dtype": "bfloat16",
        "dtype": "bfloat16",
        "enable_prefix_caching": False,
        "grammar_backend": "outlines",
        "max_loras": 2,
        "seed": 3,
    }


def test_defaults_and_keys_from_the_environment(served, monkeypatch):
    monkeypatch.setenv("LOOMLM_API_KEY", "from-env")
    assert main(["serve"]) == 0
    config = served[-1]
    assert config.model is None and (config.host, config.port) == ("127.0.0.1", 8000)
    assert config.api_key == "from-env" and config.admin_key is None
    assert config.adapters == {} and config.engine_options == {} and config.max_waiting is None
    assert config.shutdown_timeout == serve.SHUTDOWN_TIMEOUT_S  # what --help says
    assert main(["serve", "--model", "/m", "--api-key", "given"]) == 0
    assert served[-1].api_key == "given" and served[-1].model == "/m"


def test_run_server_exit_code_is_returned(monkeypatch):
    from loomlm.server.config import ServerConfig

    namespace = argparse.Namespace(ServerConfig=ServerConfig, run_server=lambda config: 3)
    monkeypatch.setattr(serve, "server_module", lambda: namespace)
    assert main(["serve"]) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--port", "70000"], "port"),
        (["--enable-adapter-loading"], "admin key"),
        (["--adapter", "sql=/no/such/dir"], "not a directory"),
        (["--adapter", "a=/x", "--adapter", "a=/y"], "given twice"),
        (["--served-model-name", "bad name"], "served_model_name"),
        (["--api-key", ""], "api_key"),
        (["--adapter", "missing-path"], "NAME=PATH"),
        (["/a", "--model", "/b"], "two models"),
    ],
)
def test_bad_values_are_exit_2_with_one_line(served, capsys, extra, message):
    assert main(["serve", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not served


def test_the_real_server_module_has_what_serve_needs():
    server = serve.server_module()
    assert callable(server.run_server) and callable(server.ServerConfig)


def test_data_parallel_options_become_the_server_config(served):
    argv = ["serve", "--data-parallel-size", "3", "--dp-routing", "round_robin", "--dp-max-imbalance", "0"]
    assert main(argv) == 0
    config = served[-1]
    assert (config.data_parallel_size, config.routing, config.routing_max_imbalance) == (3, "round_robin", 0)
    assert main(["serve"]) == 0
    assert (served[-1].data_parallel_size, served[-1].routing) == (1, "affinity")


def test_tensor_parallel_options_reach_the_engine_only_when_given():
    from loomlm.cli.main import build_parser

    def engine(*extra: str) -> dict:
        return serve.server_config_kwargs(build_parser().parse_args(["serve", *extra]))["engine_options"]

    assert engine() == {}
    assert engine("--tensor-parallel-size", "1") == {}  # the single-device engine every version is
    assert engine("--tensor-parallel-size", "2", "--distributed-executor-backend", "mp") == {
        "tensor_parallel_size": 2,
        "distributed_executor_backend": "mp",
    }


@pytest.mark.parametrize(
    "extra",
    [
        ["--data-parallel-size", "0"],
        ["--dp-routing", "random"],
        ["--dp-max-imbalance", "-1"],
        ["--tensor-parallel-size", "0"],
        ["--distributed-executor-backend", "ray"],
    ],
)
def test_bad_parallel_options_are_usage_errors(served, capsys, extra):
    assert main(["serve", *extra]) == 2
    assert "usage: loomlm" in capsys.readouterr().err and not served


def test_the_routing_choices_shown_are_the_routers():
    from loomlm.server import router

    assert serve.ROUTING_POLICIES == router.ROUTING_POLICIES
    assert serve.DEFAULT_MAX_IMBALANCE == router.DEFAULT_MAX_IMBALANCE
