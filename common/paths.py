"""The one cache root: ``$LOOMLM_CACHE`` (``~`` expanded) if set, else ``~/.cache/loomlm``.
Models live under ``models/``, compiled grammars under ``grammars/``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("LOOMLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "loomlm"


def model_cache_dir() -> Path:
    return cache_root() / "models"


def grammar_cache_dir() -> Path:
    return cache_root() / "grammars"
