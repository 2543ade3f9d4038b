"""IndexGrammarState: accept, validate without advancing, roll back, fill a bitmask row; EOS only in
accepting states; ``is_terminated`` is a pure query."""

from __future__ import annotations

import numpy as np
import pytest
from outlines_core import Index

from loomlm.grammar.state import IndexGrammarState
from loomlm.grammar.vocabulary import END_MARKER, TokenVocabulary

# Tokens: 0 "a", 1 "b", 2 "ab", 3 "c"; EOS 4; the end marker is virtual id 5.
EOS = 4
VOCAB = TokenVocabulary((b"a", b"b", b"ab", b"c", None), (EOS,), 5)


def make_state(regex: str) -> IndexGrammarState:
    index = Index(f"(?:{regex}){END_MARKER}", VOCAB.to_outlines())
    return IndexGrammarState(index, EOS, VOCAB.end_marker_token_id, uses_end_marker=True)


@pytest.fixture
def state():
    return make_state(r"(ab)+c?")


def allowed(state) -> set[int]:
    row = np.zeros(1, dtype=np.int32)
    state.fill_bitmask(row)
    word = int(row[0]) & 0xFFFFFFFF
    return {t for t in range(VOCAB.size) if word >> t & 1}


def test_an_accepting_state_keeps_its_ways_on():
    # Raw outlines-core drops "." after "12" here: the end marker keeps every transition.
    digits = TokenVocabulary((b"1", b"2", b".", None), (3,), 4)
    index = Index(f"(?:[0-9]+(\\.[0-9]+)?){END_MARKER}", digits.to_outlines())
    state = IndexGrammarState(index, 3, digits.end_marker_token_id)
    assert state.validate_tokens([0, 1, 2, 1, 3]) == 5
    for token in (0, 1):
        assert state.accept_token(token)
    assert state.is_accepting() and not state.is_terminated()
    assert state.accept_token(2) and not state.is_accepting()
    assert not state.accept_token(3)


def test_initial_mask_allows_only_tokens_that_can_start_a_match(state):
    assert allowed(state) == {0, 2}
    assert not state.is_accepting() and not state.is_terminated()


def test_accept_advances_and_rejects_forbidden_tokens_without_moving(state):
    assert state.accept_token(0)
    assert allowed(state) == {1}
    assert not state.accept_token(3)
    assert allowed(state) == {1}
    assert state.accept_token(1)
    assert allowed(state) == {0, 2, 3, EOS}  # accepting: EOS allowed, the match may still grow
    assert state.is_accepting() and not state.is_terminated()


def test_eos_only_in_accepting_states(state):
    assert not state.accept_token(EOS)
    state.accept_token(2)
    assert state.accept_token(EOS)
    assert state.is_terminated()
    assert allowed(state) == set()
    assert not state.accept_token(0)


def test_terminated_when_nothing_but_eos_can_follow(state):
    for token in (2, 3):
        assert state.accept_token(token)
    assert allowed(state) == {EOS}
    assert state.is_terminated()


def test_is_terminated_is_a_pure_query(state):
    state.accept_token(2)
    before = allowed(state)
    for _ in range(3):
        assert not state.is_terminated()
    assert allowed(state) == before


def test_validate_tokens_counts_the_accepted_prefix_without_advancing(state):
    assert state.validate_tokens([0, 1, 2, 3, EOS]) == 5
    assert state.validate_tokens([0, 1, 0, 3]) == 3
    assert state.validate_tokens([EOS]) == 0
    assert state.validate_tokens([2, EOS, 0]) == 2  # nothing after EOS
    assert allowed(state) == {0, 2}


def test_rollback_restores_earlier_states_including_eos(state):
    for token in (0, 1, 2):
        state.accept_token(token)
    state.accept_token(EOS)
    state.rollback(2)
    assert allowed(state) == {0, 2, 3, EOS}
    state.rollback(2)
    assert allowed(state) == {0, 2}
    with pytest.raises(ValueError, match="roll back"):
        state.rollback(1)


def test_reset_returns_to_the_start(state):
    state.accept_token(2)
    state.accept_token(EOS)
    state.reset()
    assert allowed(state) == {0, 2} and not state.is_terminated()


def test_eos_is_not_allowed_where_the_marker_is_only_string_content():
    quoted = TokenVocabulary((b'"', b"a", None), (2,), 3)
    index = Index(f'(?:"[^"]*"){END_MARKER}', quoted.to_outlines())
    state = IndexGrammarState(index, 2, quoted.end_marker_token_id)
    for token in (0, 1):  # inside the string: the marker character would be valid content
        assert state.accept_token(token)
        row = np.zeros(1, dtype=np.int32)
        state.fill_bitmask(row)
        assert not (int(row[0]) >> 2) & 1 and not state.is_accepting() and not state.accept_token(2)
    assert state.accept_token(0) and state.is_terminated() and state.accept_token(2)
