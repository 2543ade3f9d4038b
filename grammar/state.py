"""Per-request grammar state: where one request stands in its token automaton.

``GrammarState`` is the seam the engine sees (any automaton could sit behind it: see
``grammar/backends``); ``IndexGrammarState`` implements it over an outlines-core Index.
``validate_tokens`` and ``rollback`` are the seam for speculative decoding (check proposed tokens
without advancing, undo rejected ones). EOS is allowed only in accepting
states; accepting EOS terminates the grammar. ``is_terminated`` never changes the state."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from outlines_core import Guide


class GrammarState(Protocol):
    def accept_token(self, token_id: int) -> bool:
        """Advance by one token; False (state unchanged) when the token is not allowed."""

    def validate_tokens(self, token_ids: list[int]) -> int:
        """How many leading tokens of ``token_ids`` the grammar accepts, without advancing."""

    def rollback(self, num_tokens: int) -> None:
        """Undo the last ``num_tokens`` accepted tokens."""

    def fill_bitmask(self, row: np.ndarray) -> None:
        """Write the allowed-token bits (bit ``t % 32`` of word ``t // 32``) into an int32 row."""

    def is_terminated(self) -> bool:
        """Whether the grammar is complete and nothing but the end can follow. A pure query."""

    def is_accepting(self) -> bool:
        """Whether the text so far is a complete match (it may still be extended)."""

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar leaves no choice about from here (jump-forward), tokenized as the
        model would; empty when the next token is a real choice. A pure query."""

    def reset(self) -> None: ...


class IndexGrammarState:
    """An outlines-core Guide plus EOS handling. With ``uses_end_marker`` (the regex was compiled
    as ``(?:regex)END_MARKER``, see vocabulary) the text is complete exactly where the marker token
    leads to the accepting state; otherwise where the Index state is final. EOS is allowed only
    where the text is complete. Token ids >= ``marker_token_id`` are virtual, never sampled."""

    __slots__ = (
        "_eos_accepted",
        "_eos_token_id",
        "_guide",
        "_index",
        "_marker_token_id",
        "_max_rollback",
        "_uses_end_marker",
    )

    def __init__(
        self,
        index: Any,
        eos_token_id: int,
        marker_token_id: int,
        *,
        uses_end_marker: bool = True,
        max_rollback: int = 32,
    ) -> None:
        self._index = index
        self._uses_end_marker = uses_end_marker
        self._eos_token_id = eos_token_id
        self._marker_token_id = marker_token_id
        self._max_rollback = max_rollback
        self._guide = Guide(index, max_rollback=max_rollback)
        self._eos_accepted = False

    def _complete_at(self, state: int) -> bool:
        if not self._uses_end_marker:
            return self._index.is_final_state(state)
        # The marker may also be ordinary content (a character inside a JSON string); only where it
        # leads to the accepting state does it end the text.
        after = self._index.get_next_state(state, self._marker_token_id)
        return after is not None and self._index.is_final_state(after)

    def accept_token(self, token_id: int) -> bool:
        if self._eos_accepted or token_id >= self._marker_token_id:
            return False
        state = self._guide.get_state()
        if token_id == self._eos_token_id:
            if not self._complete_at(state):
                return False
            self._eos_accepted = True
            return True
        if self._index.get_next_state(state, token_id) is None:
            return False
        self._guide.advance(token_id, return_tokens=False)
        return True

    def validate_tokens(self, token_ids: list[int]) -> int:
        state = self._guide.get_state()
        finished = self._eos_accepted
        for count, token_id in enumerate(token_ids):
            if finished or token_id >= self._marker_token_id:
                return count
            if token_id == self._eos_token_id:
                if not self._complete_at(state):
                    return count
                finished = True
                continue
            state = self._index.get_next_state(state, token_id)
            if state is None:
                return count
        return len(token_ids)

    def rollback(self, num_tokens: int) -> None:
        if num_tokens <= 0:
            return
        if self._eos_accepted:
            self._eos_accepted = False
            num_tokens -= 1
        if num_tokens:
            if num_tokens > self._guide.get_allowed_rollback():
                raise ValueError(
                    f"cannot roll back {num_tokens} tokens; at most {self._guide.get_allowed_rollback()} "
                    f"are kept (max_rollback={self._max_rollback})"
                )
            self._guide.rollback_state(num_tokens)

    def fill_bitmask(self, row: np.ndarray) -> None:
        """``row`` must hold the virtual ids too (TokenVocabulary.mask_width_words); bits at or
        beyond the model's vocabulary are ignored by the apply kernel."""
        if self._eos_accepted:
            row.fill(0)
            return
        self._guide.write_mask_into(row.ctypes.data, row.size, 4)
        if self._complete_at(self._guide.get_state()):
            eos = self._eos_token_id
            row.view(np.uint32)[eos >> 5] |= np.uint32(1 << (eos & 31))

    def is_terminated(self) -> bool:
        if self._eos_accepted:
            return True
        state = self._guide.get_state()
        if not self._complete_at(state):
            return False
        # Complete, and only virtual ids (the marker, outlines' own EOS) lead on: nothing can be added.
        allowed = self._index.get_allowed_tokens(state)
        return all(t >= self._marker_token_id for t in allowed)

    def is_accepting(self) -> bool:
        return self._eos_accepted or self._complete_at(self._guide.get_state())

    def forced_tokens(self) -> list[int]:
        # A token index knows allowed tokens, not forced text: a single allowed token is rare (and a
        # longer token spelling the same bytes would usually be allowed too), so nothing is forced.
        return []

    def reset(self) -> None:
        self._guide.reset()
        self._eos_accepted = False
