"""One cache root for models and grammars: $LOOMLM_CACHE with ~ expanded, else ~/.cache/loomlm."""

from pathlib import Path

from loomlm.common.paths import cache_root, grammar_cache_dir, model_cache_dir
from loomlm.engine.config import EngineConfig


def test_a_tilde_in_loomlm_cache_is_the_home_directory_everywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LOOMLM_CACHE", "~/x")
    assert cache_root() == tmp_path / "x"
    assert model_cache_dir() == tmp_path / "x" / "models"
    assert grammar_cache_dir() == tmp_path / "x" / "grammars"
    assert EngineConfig().grammar.cache_dir == tmp_path / "x" / "grammars"
    assert "~" not in str(EngineConfig().grammar.cache_dir)


def test_without_loomlm_cache_the_root_is_under_the_home_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOMLM_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == Path(tmp_path) / ".cache" / "loomlm"
