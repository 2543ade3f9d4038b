"""Kernels: KV store by slot mapping and paged attention, each a Triton kernel beside a torch reference.

The reference (`*_ref`) is the CPU execution path and the test oracle; `*_triton` runs natively on
CUDA or under `TRITON_INTERPRET=1` on CPU; the unsuffixed functions dispatch (Triton on CUDA, else
the reference). This package imports only torch and (optionally) triton.
"""

from loomlm.kernels.kv_store import store_kv, store_kv_ref, store_kv_triton
from loomlm.kernels.paged_attention import paged_attention, paged_attention_ref, paged_attention_triton
from loomlm.kernels.workspace import AttentionWorkspace

__all__ = [
    "AttentionWorkspace",
    "paged_attention",
    "paged_attention_ref",
    "paged_attention_triton",
    "store_kv",
    "store_kv_ref",
    "store_kv_triton",
]
