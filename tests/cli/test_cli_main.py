"""The ``loomlm`` entry point: --help for every command, --version, usage errors (exit 2), -v
logging, one-line internal errors, the defaults --help prints against the library's own, and the
installed console script run as a real process."""

from __future__ import annotations

import inspect
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loomlm.cli import generate, options, sampling_options
from loomlm.cli.main import main, version

HELP_WORDS = {
    "serve": ["MODEL", "--host", "--port", "--api-key", "--admin-key", "--adapter NAME=PATH", "--adapter-dir",
              "--enable-adapter-loading", "--max-waiting", "--shutdown-timeout", "--served-model-name",
              "LOOMLM_API_KEY", "(default: 8000)"],
    "generate": ["PROMPT", "--stream", "--json", "--max-tokens", "--temperature", "--top-p", "--seed", "--n",
                 "--stop", "--adapter", "(default: 256)"],
    "chat": ["--system", "/exit", "/reset", "--max-tokens"],
    "extract": ["--schema FILE", "TEXT", "stdin", "Exit code 2", "--max-tokens"],
    "bench": ["--num-prompts", "--input-len", "--output-len", "--plot", "--request-rate", "TTFT",
              "(default: 32)"],
}  # fmt: skip
ENGINE_WORDS = ["--max-num-seqs", "--max-model-len", "--kv-cache-bytes", "--dtype", "--grammar-backend"]


@pytest.mark.parametrize("command", sorted(HELP_WORDS))
def test_help_of_every_command_exits_0_and_names_its_options(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for words in [*HELP_WORDS[command], *ENGINE_WORDS, "examples:", "-v, --verbose"]:
        assert words in out, (command, words)


def test_top_level_help_and_version(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in HELP_WORDS) and "examples:" in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"loomlm {version()}" == "loomlm 0.1.0"


@pytest.mark.parametrize(
    "argv", [[], ["frobnicate"], ["generate"], ["generate", "x", "--max-tokens", "many"], ["bench", "--nope"]]
)
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage: loomlm" in capsys.readouterr().err


def test_verbose_sets_the_loomlm_log_level(tmp_path, capsys):
    logger = logging.getLogger("loomlm")
    missing = str(tmp_path / "missing.json")
    assert main(["extract", "--schema", missing, "x", "-v"]) == 2
    assert logger.level == logging.INFO
    assert main(["-vv", "extract", "--schema", missing, "x"]) == 2
    assert logger.level == logging.DEBUG
    assert [h.get_name() for h in logger.handlers].count("loomlm-cli") == 1
    assert main(["extract", "--schema", missing, "x"]) == 2
    assert logger.level == logging.NOTSET and "loomlm-cli" not in [h.get_name() for h in logger.handlers]


def test_an_unexpected_error_is_one_line_and_its_traceback_needs_verbose(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(generate, "run", boom)
    assert main(["generate", "x"]) == 1
    err = capsys.readouterr().err
    assert (
        err.strip() == "loomlm generate: internal error: RuntimeError: boom (run with -v for the traceback)"
    )
    assert main(["generate", "x", "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_help_defaults_are_the_library_defaults():
    from loomlm import LLM, SamplingParams
    from loomlm.engine.config import LoRAConfig

    signature = inspect.signature(LLM.__init__).parameters
    assert set(options.ENGINE_KEYS) <= set(signature), "an engine option LLM does not take"
    for key, shown in options.ENGINE_DEFAULTS.items():
        assert signature[key].default == shown, key
    for key, shown in sampling_options.SAMPLING_DEFAULTS.items():
        assert SamplingParams.model_fields[key].default == shown, key
    lora = LoRAConfig()
    assert {key: getattr(lora, key) for key in options.LORA_DEFAULTS} == options.LORA_DEFAULTS


def test_sizes_parse_in_powers_of_1024():
    assert options.parse_size("65536") == 65536
    assert options.parse_size("512M") == 512 << 20
    assert options.parse_size("1.5GiB") == 3 << 29
    assert options.parse_size("4g") == 4 << 30
    for bad in ("lots", "-1G", "0", "1X"):
        with pytest.raises(Exception, match="size"):
            options.parse_size(bad)


def test_the_installed_console_script_runs():
    script = Path(sys.executable).with_name("loomlm")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "loomlm.cli.main"]
    if not script.exists() and shutil.which("loomlm") is None:
        argv = [sys.executable, "-m", "loomlm.cli.main"]
    result = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loomlm 0.1.0"
