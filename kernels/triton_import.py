"""Triton, imported once for every kernel module: ``triton``/``tl`` are None when it does not import,
so that a broken Triton install never takes the CPU path (the torch references) down with it."""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
except Exception as exc:  # any import failure, not only ImportError (e.g. a driver probe)
    triton = None
    tl = None
    TRITON_IMPORT_ERROR: Exception | None = exc
else:
    TRITON_IMPORT_ERROR = None


def require_triton() -> None:
    """Raise a RuntimeError naming the import failure when Triton is unavailable."""
    if triton is None:
        raise RuntimeError(f"triton is not available: {TRITON_IMPORT_ERROR!r}")
