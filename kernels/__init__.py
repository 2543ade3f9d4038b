"""Kernels: KV store by slot mapping, paged attention and multi-LoRA shrink/expand, each a Triton kernel
beside a torch reference.

The reference (`*_ref`) is the CPU execution path and the test oracle; `*_triton` runs natively on
CUDA or under `TRITON_INTERPRET=1` on CPU; the unsuffixed functions dispatch (Triton on CUDA, else
the reference). This package imports only torch and (optionally) triton.
"""

from loomlm.kernels.kv_store import store_kv, store_kv_ref, store_kv_triton
from loomlm.kernels.lora import (
    LoRAKernelMeta,
    LoRARanks,
    lora_expand,
    lora_expand_ref,
    lora_expand_triton,
    lora_shrink,
    lora_shrink_ref,
    lora_shrink_triton,
)
from loomlm.kernels.paged_attention import paged_attention, paged_attention_ref, paged_attention_triton
from loomlm.kernels.workspace import AttentionWorkspace

__all__ = [
    "AttentionWorkspace",
    "LoRAKernelMeta",
    "LoRARanks",
    "lora_expand",
    "lora_expand_ref",
    "lora_expand_triton",
    "lora_shrink",
    "lora_shrink_ref",
    "lora_shrink_triton",
    "paged_attention",
    "paged_attention_ref",
    "paged_attention_triton",
    "store_kv",
    "store_kv_ref",
    "store_kv_triton",
]
