"""Shared option groups: the engine options (-> ``LLM(**kwargs)`` / ``AsyncLLM`` / the server's
``engine_options``), ``--model`` and ``--adapter``; the sampling options are in sampling_options.py.

Options left out are not passed on, so the library's own defaults apply; the defaults printed by
``--help`` are those defaults (``tests/cli`` checks them against ``LLM`` and ``SamplingParams``)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from loomlm.cli.common import parse_adapter
from loomlm.engine.config import KV_CACHE_DTYPES, LORA_DTYPES

# ``LLM.__init__`` defaults shown in --help (the options themselves default to None: not passed).
ENGINE_DEFAULTS: dict[str, Any] = {
    "max_num_seqs": 128,
    "max_num_batched_tokens": 2048,
    "block_size": 16,
    "dtype": "float32",
    "device": "cpu",
    "scheduling_policy": "fcfs",
    "grammar_backend": "auto",
}
# ``LoRAConfig`` defaults shown in --help.
LORA_DEFAULTS: dict[str, Any] = {"max_loras": 4, "max_lora_rank": 64}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``4G``, ``512M``, ``1.5GiB``, ``65536`` (powers of 1024); an argparse ``type``."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 4G, got {text!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    value = int(number * 1024 ** "_kmgt".index(unit or "_"))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m",
        "--model",
        metavar="DIR",
        help="local Hugging Face checkpoint directory (Llama, Mistral, Qwen2: config.json + *.safetensors) "
        "(default: the embedded SmolLM2-135M-Instruct)",
    )


def add_adapter_option(parser: Any, help_text: str) -> None:
    """``--adapter NAME=PATH`` (repeatable) on a parser or an argument group."""
    parser.add_argument(
        "--adapter", metavar="NAME=PATH", type=parse_adapter, action="append", default=None, help=help_text
    )


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """The engine options of ``LLM(...)`` that exist, as one group (all default to "not given")."""
    g = parser.add_argument_group("engine options")
    d = ENGINE_DEFAULTS
    g.add_argument(
        "--max-num-seqs",
        type=positive_int,
        metavar="N",
        help=f"most sequences in one batch (default: {d['max_num_seqs']})",
    )
    g.add_argument(
        "--max-num-batched-tokens",
        type=positive_int,
        metavar="N",
        help=f"token budget of one engine step (default: {d['max_num_batched_tokens']})",
    )
    g.add_argument(
        "--max-model-len",
        type=positive_int,
        metavar="N",
        help="context length: prompt + output tokens (default: the model's own)",
    )
    g.add_argument(
        "--no-chunked-prefill",
        dest="enable_chunked_prefill",
        action="store_false",
        default=None,
        help="prefill each prompt in one step instead of in chunks",
    )
    g.add_argument(
        "--scheduling-policy",
        choices=("fcfs", "priority"),
        help=f"waiting queue order (default: {d['scheduling_policy']})",
    )
    g.add_argument(
        "--block-size",
        type=positive_int,
        metavar="N",
        help=f"tokens per KV cache block, a power of two (default: {d['block_size']})",
    )
    kv = g.add_mutually_exclusive_group()
    kv.add_argument(
        "--kv-cache-bytes",
        type=parse_size,
        metavar="SIZE",
        help="KV cache memory, e.g. 512M or 4G (default: the engine's budget)",
    )
    kv.add_argument("--num-kv-blocks", type=positive_int, metavar="N", help="KV cache size in blocks")
    g.add_argument(
        "--kv-cache-dtype",
        choices=KV_CACHE_DTYPES,
        help="KV cache dtype: auto (the model's; bfloat16 under --quantization bf16), or bfloat16 for a "
        "float32 model on the CPU (half the cache bytes) (default: auto)",
    )
    g.add_argument(
        "--no-prefix-caching",
        dest="enable_prefix_caching",
        action="store_false",
        default=None,
        help="do not reuse the KV cache of shared prompt prefixes",
    )
    g.add_argument("--device", metavar="DEV", help=f"torch device, e.g. cuda (default: {d['device']})")
    g.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16", "auto"),
        help="weights and activations dtype; auto: chosen for this machine at load (bfloat16 only "
        f"where measured faster) (default: {d['dtype']})",
    )
    g.add_argument(
        "--quantization",
        choices=("int8", "int4", "q8_0", "bf16"),
        help="quantized linear layers (CPU, float32 activations): int8 (per-channel weights, per-token "
        "activations), int4 (GGUF Q4_1 blocks, Q8_0 LM head; the default model's own blocks), q8_0, "
        "bf16 (bfloat16 weights and GEMMs, for CPUs with AVX-512 BF16 or AMX); "
        "see bench/quant.py (default: none)",
    )
    g.add_argument(
        "--grammar-backend",
        choices=("auto", "llguidance", "outlines"),
        help="what enforces structured output; auto: llguidance, falling back to outlines "
        f"(default: {d['grammar_backend']})",
    )
    g.add_argument(
        "--no-jump-forward",
        dest="jump_forward",
        action="store_false",
        default=None,
        help="do not append the tokens a grammar forces without a model step",
    )
    g.add_argument(
        "--enable-lora",
        action="store_true",
        default=None,
        help="serve LoRA adapters (on when --adapter or a --max-lora* option is given)",
    )
    g.add_argument(
        "--max-loras",
        type=positive_int,
        metavar="N",
        help=f"most adapters in one step (default: {LORA_DEFAULTS['max_loras']})",
    )
    g.add_argument(
        "--max-lora-rank",
        type=positive_int,
        metavar="R",
        help=f"highest adapter rank (default: {LORA_DEFAULTS['max_lora_rank']})",
    )
    g.add_argument(
        "--max-cpu-loras",
        type=positive_int,
        metavar="N",
        help="adapters kept in memory (default: max(max_loras, 16))",
    )
    g.add_argument(
        "--lora-dtype",
        choices=LORA_DTYPES,
        help="adapter weights: auto (the model's dtype) or int8 (CPU, float32; faster with many adapters) "
        "(default: auto)",
    )


ENGINE_KEYS = (
    "max_num_seqs",
    "max_num_batched_tokens",
    "max_model_len",
    "enable_chunked_prefill",
    "scheduling_policy",
    "block_size",
    "kv_cache_bytes",
    "num_kv_blocks",
    "enable_prefix_caching",
    "kv_cache_dtype",
    "device",
    "dtype",
    "quantization",
    "grammar_backend",
    "jump_forward",
    "enable_lora",
    "max_loras",
    "max_lora_rank",
    "max_cpu_loras",
    "lora_dtype",
)


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options given on the command line, as ``LLM`` keyword arguments."""
    return {key: getattr(args, key) for key in ENGINE_KEYS if getattr(args, key, None) is not None}
