"""The on-disk grammar cache is data only and authenticated: a planted or damaged entry never runs
code, is logged and recompiled; a truncated or foreign entry is a miss; the folder is private (0700,
files 0600) and is found under the one cache root, ``$LOOMLM_CACHE`` with ``~`` expanded."""

from __future__ import annotations

import logging
import os
import pickle
import shlex
import stat
import struct

import pytest
from outlines_core import Index, Vocabulary

from loomlm.common.paths import grammar_cache_dir
from loomlm.grammar import compiler as compiler_module
from loomlm.grammar import disk_cache
from loomlm.grammar.compiler import CompilerConfig, GrammarCompiler
from loomlm.grammar.disk_cache import GrammarDiskCache, index_to_bytes
from loomlm.grammar.state import IndexGrammarState
from loomlm.grammar.vocabulary import TokenVocabulary

# Printable ASCII bytes as single tokens, EOS = 0 (as in test_compiler.py).
VOCAB = TokenVocabulary((None, *(bytes([b]) for b in range(32, 127))), (0,), 96)
REGEX = "yes|no"
LOGGER = "loomlm.grammar.disk_cache"


def accepts(compiled, text: str) -> bool:
    state = IndexGrammarState(
        compiled.index, 0, VOCAB.end_marker_token_id, uses_end_marker=compiled.uses_end_marker
    )
    return all(state.accept_token(ord(ch) - 31) for ch in text) and state.accept_token(0)


def compile_once(cache_dir, regex: str = REGEX):
    """A fresh compiler on ``cache_dir`` (so no memory-cache hit) compiles ``regex`` once."""
    compiler = GrammarCompiler(VOCAB, CompilerConfig(cache_dir=cache_dir, timeout_s=20))
    try:
        return compiler.submit(regex).result(timeout=60)
    finally:
        compiler.close()


def assert_correct(compiled) -> None:
    assert accepts(compiled, "yes") and accepts(compiled, "no")
    assert not accepts(compiled, "ye") and not accepts(compiled, "nope")


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def entry(cache_dir):
    """The cache file of REGEX, written by a first compile."""
    compiled = compile_once(cache_dir)
    assert compiled.source == "compiled"
    return cache_dir / f"{compiled.key}.index"


def warnings_about(caplog, path) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and str(path) in r.getMessage()]


class Exploit:
    """A pickle that runs a shell command when it is loaded."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("forged_header", [False, True], ids=["bare-pickle", "pickle-behind-forged-header"])
def test_a_planted_pickle_is_never_executed_and_the_grammar_is_recompiled(
    entry, cache_dir, tmp_path, caplog, forged_header
):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Exploit(f"touch {shlex.quote(str(marker))}"))
    if forged_header:  # right magic, version, key and length; the attacker cannot make the tag
        key = entry.stem.encode()
        header = struct.pack(">8sHH", disk_cache.MAGIC, disk_cache.FORMAT_VERSION, len(key))
        payload = header + key + struct.pack(">Q", len(payload)) + b"\x00" * 32 + payload
    entry.write_bytes(payload)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        compiled = compile_once(cache_dir)

    assert not marker.exists()
    assert compiled.source == "compiled"
    assert_correct(compiled)
    assert warnings_about(caplog, entry)
    assert compile_once(cache_dir).source == "disk"  # the entry was rewritten


def test_flipped_payload_bytes_fail_the_tag_are_logged_and_recompiled(entry, cache_dir, caplog):
    data = bytearray(entry.read_bytes())
    data[-1] ^= 0xFF
    entry.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        compiled = compile_once(cache_dir)

    assert compiled.source == "compiled"
    assert_correct(compiled)
    assert any("tag" in message for message in warnings_about(caplog, entry))
    assert compile_once(cache_dir).source == "disk"


@pytest.mark.parametrize("keep", [0, 5, 20, 0.5, -1], ids=lambda k: f"keep-{k}")
def test_a_truncated_entry_is_a_logged_miss(entry, cache_dir, caplog, keep):
    data = entry.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    entry.write_bytes(data[:cut])

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        compiled = compile_once(cache_dir)

    assert compiled.source == "compiled"
    assert_correct(compiled)
    assert warnings_about(caplog, entry)


def test_an_entry_written_with_another_users_secret_is_a_miss(entry, tmp_path, caplog):
    other_dir = tmp_path / "other"
    compile_once(other_dir, "ok")  # its own cache folder, with its own secret
    foreign = other_dir / entry.name
    foreign.write_bytes(entry.read_bytes())

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        compiled = compile_once(other_dir)

    assert compiled.source == "compiled"
    assert_correct(compiled)
    assert any("tag" in message for message in warnings_about(caplog, foreign))


def test_an_entry_renamed_to_another_key_is_a_miss(entry, cache_dir, caplog):
    other_key = GrammarCompiler(VOCAB).cache_key("ok")
    (cache_dir / f"{other_key}.index").write_bytes(entry.read_bytes())

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        compiled = compile_once(cache_dir, "ok")

    assert compiled.source == "compiled"
    assert any("another cache key" in m for m in warnings_about(caplog, f"{other_key}.index"))


def test_a_second_compiler_on_the_same_folder_reads_the_entry(entry, cache_dir):
    compiled = compile_once(cache_dir)
    assert compiled.source == "disk"
    assert_correct(compiled)


def test_the_folder_is_created_0700_and_the_secret_and_entries_are_0600(entry, cache_dir):
    def mode(path) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    assert mode(cache_dir) == 0o700
    assert mode(cache_dir / ".key") == 0o600 and len((cache_dir / ".key").read_bytes()) == 32
    assert mode(entry) == 0o600
    assert sorted(p.name for p in cache_dir.iterdir()) == [".key", entry.name]  # no temp files left


def test_a_folder_of_ours_that_is_too_open_is_narrowed_to_0700(cache_dir):
    cache_dir.mkdir(mode=0o755)
    os.chmod(cache_dir, 0o755)
    compile_once(cache_dir)
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700


def test_a_secret_readable_by_others_disables_the_disk_cache_with_one_warning(entry, cache_dir, caplog):
    os.chmod(cache_dir / ".key", 0o644)
    compiler = GrammarCompiler(VOCAB, CompilerConfig(cache_dir=cache_dir, timeout_s=20))
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert compiler.submit(REGEX).result(timeout=60).source == "compiled"  # entry not trusted
            assert compiler.submit("ok").result(timeout=60).source == "compiled"
    finally:
        compiler.close()
    warnings = warnings_about(caplog, cache_dir)
    assert len(warnings) == 1 and "group or others" in warnings[0]
    assert not (cache_dir / f"{compiler.cache_key('ok')}.index").exists()


def test_a_folder_owned_by_another_user_is_not_used(cache_dir, caplog):
    cache_dir.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(cache_dir, 65534, -1)
    else:
        pytest.skip("needs root to give the folder to another user")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        compiled = compile_once(cache_dir)
    assert compiled.source == "compiled"
    assert_correct(compiled)
    assert any("belongs to uid 65534" in m for m in warnings_about(caplog, cache_dir))
    assert list(cache_dir.iterdir()) == []  # no secret, no entry written into a foreign folder


def test_disk_errors_never_fail_a_compile(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    compiled = compile_once(blocker / "cache")  # the folder cannot be created
    assert compiled.source == "compiled"
    assert_correct(compiled)


def test_a_payload_that_passes_the_tag_but_does_not_load_is_a_miss(cache_dir, caplog):
    cache = GrammarDiskCache(cache_dir)
    assert cache.read("ab" * 20) is None  # sets the folder and secret up
    secret = (cache_dir / ".key").read_bytes()
    path = cache_dir / f"{'ab' * 20}.index"
    path.write_bytes(disk_cache._pack("ab" * 20, b"\xff" * 64, secret))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert cache.read("ab" * 20) is None
    assert any("does not load" in m for m in warnings_about(caplog, path))


def test_entries_hold_outlines_core_binary_and_round_trip(cache_dir):
    index = Index("ab+c", Vocabulary(3, {b"a": [0], b"b": [1], b"c": [2]}))
    constructor, args = index.__reduce__()[:2]
    assert constructor == Index.from_binary and args == (index_to_bytes(index),)
    cache = GrammarDiskCache(cache_dir)
    cache.write("cd" * 20, index)
    assert (cache_dir / f"{'cd' * 20}.index").read_bytes().startswith(disk_cache.MAGIC)
    loaded = GrammarDiskCache(cache_dir).read("cd" * 20)
    assert loaded is not None and loaded.get_transitions() == index.get_transitions()
    assert loaded.get_final_states() == index.get_final_states()


def test_loomlm_cache_with_a_tilde_is_under_the_expanded_home(tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LOOMLM_CACHE", "~/x")
    assert grammar_cache_dir() == home / "x" / "grammars"
    assert not hasattr(compiler_module, "default_grammar_cache_dir")  # one cache root: common.paths
    GrammarDiskCache(grammar_cache_dir()).write("ef" * 20, Index("a", Vocabulary(1, {b"a": [0]})))
    assert (home / "x" / "grammars" / f"{'ef' * 20}.index").exists()
    assert not (cwd / "~").exists()
    monkeypatch.delenv("LOOMLM_CACHE")
    assert grammar_cache_dir() == home / ".cache" / "loomlm" / "grammars"
