"""TokenVocabulary: the byte string each token id stands for, taken from a Hugging Face tokenizer.

Byte-level BPE tokens (GPT-2, Llama 3, SmolLM, Qwen) spell bytes through the GPT-2 byte-to-unicode
map; SentencePiece tokens use ``▁`` for a space and ``<0xNN>`` pieces for byte fallback. Special
tokens are excluded (a grammar never produces them); EOS is kept apart and allowed by the automaton
only in accepting states. ``digest`` identifies the vocabulary in compile-cache keys."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from outlines_core import Vocabulary

# outlines-core (0.2.x) drops the token transitions that leave an accepting state for a non-accepting
# one: with "[0-9]+(\.[0-9]+)?" nothing may follow "12". Every compiled regex therefore ends in this
# character, spelled by one virtual token (id = vocabulary size) that stands for EOS: the only
# accepting state is after it, so no transition is lost. U+10FFFF is a noncharacter, never in text.
END_MARKER = "\U0010ffff"
_END_MARKER_BYTES = END_MARKER.encode()
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SENTENCEPIECE_SPACE = "\u2581"


def _gpt2_unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table: printable bytes map to themselves, the others to
    code points from 256 upward, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping


_UNICODE_TO_BYTE = _gpt2_unicode_to_byte()


@dataclass(frozen=True, slots=True)
class TokenVocabulary:
    """``token_bytes[i]`` is token i's bytes, or None for special/unused ids. ``size`` is the
    model's vocabulary size (the logits width), which may exceed the tokenizer's."""

    token_bytes: tuple[bytes | None, ...]
    eos_token_ids: tuple[int, ...]
    size: int
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.eos_token_ids:
            raise ValueError("a grammar vocabulary needs at least one EOS token id")
        if len(self.token_bytes) > self.size:
            raise ValueError(f"{len(self.token_bytes)} tokens do not fit a vocabulary of size {self.size}")
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([self.size, list(self.eos_token_ids)]).encode())
        for token in self.token_bytes:
            h.update(b"\xff" if token is None else len(token).to_bytes(2, "little") + token)
        object.__setattr__(self, "digest", h.hexdigest())

    @property
    def eos_token_id(self) -> int:
        return self.eos_token_ids[0]

    @property
    def end_marker_token_id(self) -> int:
        """The virtual token that spells END_MARKER (allowed exactly where EOS is)."""
        return self.size

    @property
    def mask_width_words(self) -> int:
        """int32 words per bitmask row: room for the real tokens and the two virtual ids."""
        return -(-(self.size + 2) // 32)

    def to_outlines_map(self) -> dict[bytes, list[int]]:
        """Token ids grouped by byte string, EOS excluded, plus the end-marker token: the map
        outlines-core's Vocabulary takes. Tokens that could spell part of the marker are left out
        (they end in a prefix of its bytes: only plane-16 private-use characters are lost)."""
        grouped: dict[bytes, list[int]] = {}
        eos = set(self.eos_token_ids)
        marker_prefixes = tuple(_END_MARKER_BYTES[:n] for n in range(1, len(_END_MARKER_BYTES)))
        for token_id, token in enumerate(self.token_bytes):
            if not token or token_id in eos:
                continue
            if token.endswith(marker_prefixes) or _END_MARKER_BYTES in token:
                continue
            grouped.setdefault(token, []).append(token_id)
        grouped.setdefault(_END_MARKER_BYTES, []).append(self.end_marker_token_id)
        return grouped

    @property
    def outlines_eos_token_id(self) -> int:
        # outlines-core needs an EOS id of its own; a second virtual id that no mask ever shows.
        return self.size + 1

    def to_outlines(self) -> Vocabulary:
        return Vocabulary(self.outlines_eos_token_id, self.to_outlines_map())

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, vocab_size: int | None = None, eos_token_ids: tuple[int, ...] = ()
    ) -> TokenVocabulary:
        """Read a Hugging Face tokenizer. ``vocab_size`` is the logits width (default: the
        tokenizer's length); ``eos_token_ids`` default to the tokenizer's EOS."""
        num_tokens = len(tokenizer)
        size = vocab_size if vocab_size is not None else num_tokens
        eos = tuple(eos_token_ids) or (
            (tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else ()
        )
        special = set(tokenizer.all_special_ids)
        special.update(i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special)
        pieces = tokenizer.convert_ids_to_tokens(list(range(min(num_tokens, size))))
        byte_level = _is_byte_level(tokenizer)
        added = {i: t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        token_bytes: list[bytes | None] = []
        for token_id, piece in enumerate(pieces):
            if token_id in special or piece is None:
                token_bytes.append(None)
            elif token_id in added:  # added tokens are stored as plain text, not byte-mapped
                token_bytes.append(added[token_id].encode() or None)
            else:
                token_bytes.append(_piece_bytes(piece, byte_level) or None)
        return cls(tuple(token_bytes), eos, size)


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
        kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", [])}
        if "ByteLevel" in kinds:
            return True
        if "ByteFallback" in kinds or "Metaspace" in kinds or "Replace" in kinds:
            return False
    # No backend description: byte-level vocabularies spell a space as "Ġ".
    return any(
        piece.startswith("Ġ")
        for piece in tokenizer.convert_ids_to_tokens(list(range(min(1000, len(tokenizer)))))
        if piece
    )


def _piece_bytes(piece: str, byte_level: bool) -> bytes:
    if byte_level:
        try:
            return bytes(_UNICODE_TO_BYTE[ch] for ch in piece)
        except KeyError:
            return piece.encode()  # a piece outside the byte map is literal text
    match = _BYTE_FALLBACK.match(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    return piece.replace(_SENTENCEPIECE_SPACE, " ").encode()
