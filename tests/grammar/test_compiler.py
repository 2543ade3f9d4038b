"""GrammarCompiler: futures from a worker process, memory and disk caches, shared in-flight compiles,
and clear errors for bad regexes, oversized regexes and compiles past their time limit."""

from __future__ import annotations

import logging

import pytest

from loomlm.grammar.compiler import CompilerConfig, GrammarCompiler
from loomlm.grammar.errors import GrammarCompileError, InvalidRegexError
from loomlm.grammar.state import IndexGrammarState
from loomlm.grammar.vocabulary import TokenVocabulary

# Printable ASCII bytes as single tokens, EOS = 0.
VOCAB = TokenVocabulary((None, *(bytes([b]) for b in range(32, 127))), (0,), 96)


def token(ch: str) -> int:
    return ord(ch) - 31


@pytest.fixture
def compiler(tmp_path):
    compiler = GrammarCompiler(VOCAB, CompilerConfig(cache_dir=tmp_path / "cache", timeout_s=20))
    yield compiler
    compiler.close()


def accepts(compiled, text: str) -> bool:
    state = IndexGrammarState(
        compiled.index, 0, VOCAB.end_marker_token_id, uses_end_marker=compiled.uses_end_marker
    )
    return all(state.accept_token(token(ch)) for ch in text) and state.accept_token(0)


def test_compiles_in_a_worker_and_the_index_enforces_the_regex(compiler):
    compiled = compiler.submit(r"[0-9]{2,3}(\.[0-9])?", end_marker=True).result(timeout=60)
    assert compiled.source == "compiled" and compiled.uses_end_marker
    assert accepts(compiled, "12") and accepts(compiled, "123.4")
    assert not accepts(compiled, "1") and not accepts(compiled, "1234") and not accepts(compiled, "12.")


def test_without_the_end_marker_outlines_core_cannot_grow_past_a_complete_match(compiler):
    # The outlines-core 0.2 behaviour the end marker exists for: "12" is complete, so "." is lost.
    plain = compiler.submit(r"[0-9]{2,3}(\.[0-9])?").result(timeout=60)
    assert accepts(plain, "12") and accepts(plain, "123")
    assert not accepts(plain, "12.5")
    assert compiler.cache_key("a", end_marker=True) != compiler.cache_key("a")


def test_second_request_hits_memory_and_a_new_compiler_hits_disk(compiler, tmp_path):
    first = compiler.submit("yes|no").result(timeout=60)
    again = compiler.submit("yes|no").result(timeout=60)
    assert again.source == "memory" and again.key == first.key
    fresh = GrammarCompiler(VOCAB, CompilerConfig(cache_dir=tmp_path / "cache"))
    try:
        from_disk = fresh.submit("yes|no").result(timeout=60)
        assert from_disk.source == "disk" and accepts(from_disk, "no")
    finally:
        fresh.close()


def test_corrupt_disk_entry_is_a_logged_miss_and_is_rewritten(compiler, tmp_path, caplog):
    # Tampered, truncated and foreign entries: see test_disk_cache.py.
    entry = tmp_path / "cache" / f"{compiler.cache_key('abc')}.index"
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(b"not a cache entry")
    with caplog.at_level(logging.WARNING, logger="loomlm.grammar.disk_cache"):
        compiled = compiler.submit("abc").result(timeout=60)
    assert compiled.source == "compiled" and accepts(compiled, "abc")
    assert any(str(entry) in record.getMessage() for record in caplog.records)
    fresh = GrammarCompiler(VOCAB, CompilerConfig(cache_dir=tmp_path / "cache"))
    try:
        assert fresh.submit("abc").result(timeout=60).source == "disk"  # the entry was rewritten
    finally:
        fresh.close()


def test_identical_regexes_in_flight_share_one_future(compiler):
    futures = [compiler.submit("[a-z]{1,40}@[a-z]{1,40}") for _ in range(4)]
    # Submitted while the first compiles: the same Future; submitted after: a memory-cache hit.
    assert all(f is futures[0] or f.result(timeout=60).source == "memory" for f in futures[1:])
    assert len({f.result(timeout=60).key for f in futures}) == 1


def test_cache_key_depends_on_the_vocabulary(compiler):
    other = TokenVocabulary((None, *(bytes([b]) for b in range(32, 127))), (0,), 97)
    assert GrammarCompiler(other).cache_key("a") != compiler.cache_key("a")


def test_invalid_and_unsatisfiable_regexes_fail_with_a_clear_error(compiler):
    with pytest.raises(InvalidRegexError, match="does not parse"):
        compiler.submit("(unclosed").result(timeout=60)
    with pytest.raises(InvalidRegexError, match="vocabulary"):
        compiler.submit("é").result(timeout=60)  # no token spells a non-ASCII byte
    assert accepts(compiler.submit("ok").result(timeout=60), "ok")  # the worker still serves


def test_oversized_regex_is_refused_before_compiling(tmp_path):
    small = GrammarCompiler(VOCAB, CompilerConfig(max_regex_len=10))
    with pytest.raises(GrammarCompileError, match="max_regex_len"):
        small.submit("a" * 11).result(timeout=5)


def test_compile_past_the_time_limit_is_stopped_and_the_next_compile_works(tmp_path):
    slow = GrammarCompiler(VOCAB, CompilerConfig(timeout_s=0.5))
    try:
        # A DFA with ~2^22 states: far more than half a second to build.
        with pytest.raises(GrammarCompileError, match=r"longer than 0\.5 s"):
            slow.submit("[a-z]*a[a-z]{22}").result(timeout=60)
        assert accepts(slow.submit("b+").result(timeout=60), "bbb")
    finally:
        slow.close()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_workers"):
        CompilerConfig(num_workers=0)
    with pytest.raises(ValueError, match="timeout_s"):
        CompilerConfig(timeout_s=0)
