"""`loomlm._C`, the C++ CPU kernels of csrc/ (built at install against the installed torch), or None
where the install has none (no torch at build time, not x86-64): the one place it is imported.
Callers then run their torch references."""

from __future__ import annotations

import importlib

try:
    _C = importlib.import_module("loomlm._C")
except ImportError:
    _C = None
