"""Incremental detokenization of one generated sequence. It decodes and yields stream deltas; it
decides nothing (stopping, stop strings included, is the StopChecker's decision).

The text is produced with a sliding window over the token ids: each step decodes only the tokens
from ``_prefix_offset`` on (a little already-emitted context plus the new tokens) and emits the
characters of that decode not emitted yet. Context before the new tokens matters because decoders
are not concatenative: SentencePiece decoders strip the leading space of the first token they see,
and a multi-byte character may be split across tokens. Once the window decodes to complete
characters, it slides forward, so the cost per token stays O(1) amortised.
"""

from __future__ import annotations

from typing import Any

from loomlm.engine.sampling_params import SamplingParams
from loomlm.engine.stop_checker import stop_prefix_len

# Prompt tokens decoded as context before the first output token (enough for any decoder we know:
# a space-stripping first token, or a character split over up to 4 byte tokens).
_PROMPT_CONTEXT_TOKENS = 5
# What a decoder prints for bytes that are not (yet) a complete UTF-8 character.
_REPLACEMENT = "\ufffd"
# SentencePiece's word-boundary marker (decoders turn it into a space).
_SPIECE_SPACE = "\u2581"


class IncrementalDetokenizer:
    """Turns a stream of output token ids into text and yields stream deltas.

    The text is the continuation of the prompt's text: for a SentencePiece tokenizer an output that
    starts with a "▁word" token starts with a space (as ``decode(prompt + output)`` has it), which
    ``decode(output)`` alone would strip. For byte-level BPE both agree.
    """

    def __init__(self, tokenizer: Any, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self._tokenizer = tokenizer
        self._skip_special = params.skip_special_tokens
        # Only to hold back a stream tail that may still become a stop string (see get_delta).
        self._stops = list(params.stop)

        # Only the prompt's tail is kept: it is all the window ever looks at.
        tail = list(prompt_token_ids[-_PROMPT_CONTEXT_TOKENS:])
        self._ids: list[int] = tail
        self._prefix_offset = 0  # window start (index into self._ids)
        self._read_offset = len(tail)  # first token whose text is not fully emitted
        # Characters of decode(ids[prefix_offset:]) already emitted (or belonging to the prompt).
        # A prompt ending in an incomplete character leaves U+FFFD there; the output completes it.
        self._emitted_in_window = len(self._decode(tail).rstrip(_REPLACEMENT))

        self._text = ""
        self._sent = 0  # characters of self._text already returned by get_delta
        self._final = False  # truncated at a stop: nothing more is appended

    @property
    def output_text(self) -> str:
        """The output text so far (cut at the stop string, once one ended the sequence)."""
        return self._text

    def update(self, new_token_ids: list[int]) -> str:
        """Append tokens; return the text they completed (possibly empty: an incomplete UTF-8
        character waits for its next byte)."""
        if self._final or not new_token_ids:
            return ""
        self._ids.extend(new_token_ids)
        new_text = self._advance_window(flush=False)
        self._text += new_text
        return new_text

    def truncate(self, num_chars: int) -> None:
        """Cut the text to ``num_chars`` characters (the StopChecker's stop-string decision); the
        sequence is over, so later updates and flushes add nothing."""
        self._text = self._text[:num_chars]
        self._sent = min(self._sent, num_chars)
        self._final = True

    def flush(self) -> None:
        """Emit text held back for an incomplete UTF-8 sequence (call when generation ends).

        Whatever the decoder makes of the dangling bytes (U+FFFD) becomes text, as
        ``tokenizer.decode`` would show it."""
        if not self._final:
            self._text += self._advance_window(flush=True)
            self._final = True

    def get_delta(self, finished: bool) -> str:
        """Text added since the last call. Unless finished, a tail that could begin a stop string is
        held back, so a stream never shows part of a stop string that is then cut off."""
        if finished:
            self.flush()
        end = len(self._text)
        if not finished and self._stops:
            end -= stop_prefix_len(self._text, self._stops, self._sent)
        if end <= self._sent:
            return ""
        delta = self._text[self._sent : end]
        self._sent = end
        return delta

    def decode_token(self, token_id: int) -> str:
        """One token's text for logprob display (best effort: partial bytes show the raw token)."""
        token = self._tokenizer.convert_ids_to_tokens(token_id)
        if token is None:
            return ""
        try:
            text = self._tokenizer.convert_tokens_to_string([token])
        except Exception:  # tokenizers without a string convention: show the token itself
            return str(token)
        if _REPLACEMENT in text:  # a lone byte of a multi-byte character ("<0xE4>", "ä½")
            return str(token)
        if token.startswith(_SPIECE_SPACE) and not text.startswith(" "):
            # SentencePiece decoders strip the space a lone "▁word" starts with; display keeps it.
            text = " " + text
        return text

    # -- internals ---------------------------------------------------------------------------------

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        # No clean-up: it rewrites spaces around punctuation depending on what follows.
        return self._tokenizer.decode(
            ids, skip_special_tokens=self._skip_special, clean_up_tokenization_spaces=False
        )

    def _advance_window(self, flush: bool) -> str:
        """Decode the window, return its not-yet-emitted complete text and slide it if possible."""
        window_text = self._decode(self._ids[self._prefix_offset :])
        incomplete = window_text.endswith(_REPLACEMENT) and not flush
        # Characters before a trailing incomplete one are final already: emit them now.
        stable = window_text.rstrip(_REPLACEMENT) if incomplete else window_text
        new_text = stable[self._emitted_in_window :] if len(stable) > self._emitted_in_window else ""
        self._emitted_in_window = max(self._emitted_in_window, len(stable))
        if not incomplete:
            # Everything decoded is complete: the tokens just read become the next window's context.
            # (A run of tokens that each end mid-character keeps the window growing until one ends
            # on a character boundary; real vocabularies do not chain many of those.)
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            self._emitted_in_window = len(self._decode(self._ids[self._prefix_offset :]))
            # Drop ids no window will look at again, so memory stays bounded too.
            if self._prefix_offset > 0:
                del self._ids[: self._prefix_offset]
                self._read_offset -= self._prefix_offset
                self._prefix_offset = 0
        return new_text
