"""Fixtures of the grammar tests: a real outlines-core automaton over a byte-level vocabulary, and an
llguidance backend over the SmolLM2 tokenizer with a token-by-token acceptance check."""

from __future__ import annotations

import json
import random
import re
from collections import deque

import pytest
from outlines_core import Index, Vocabulary

from loomlm.grammar.backends.llguidance import LlguidanceBackend
from loomlm.grammar.specs import resolve_response_format

EOS_ID = 256
# grammar/compiler.py compiles a regex R as "(?:R)" + END_MARKER, because outlines-core's Index drops
# the continuations of a complete match that need two or more bytes (top-level "2" -> "2.5"). Index
# builds with the marker cost milliseconds per DFA state, so the fixture compiles R as is and uses the
# marker form only for texts that are a top-level number (the one place where a JSON document can go on
# after a complete match); for long regexes (slow marker builds) that one case is checked with Python re.
_MARKER_REGEX_LIMIT = 3000
END_MARKER = "\U0010ffff"


class ByteAutomaton:
    """Compiles regexes with ``outlines_core.Index`` over one-byte tokens (cached per regex) and
    answers "does this text match" by walking the UTF-8 bytes, plus random walks that sample texts."""

    def __init__(self) -> None:
        self._vocabulary = Vocabulary(EOS_ID, {bytes([b]): [b] for b in range(256)})
        self._indexes: dict[str, Index] = {}
        self._distances: dict[str, dict[int, int]] = {}

    def index(self, regex: str) -> Index:
        if regex not in self._indexes:
            self._indexes[regex] = Index(regex, self._vocabulary)
        return self._indexes[regex]

    def matches(self, regex: str, text: str) -> bool:
        if _is_number(text):
            if len(regex) > _MARKER_REGEX_LIMIT:
                return re.fullmatch(regex, text) is not None
            regex, text = f"(?:{regex}){END_MARKER}", text + END_MARKER
        index = self.index(regex)
        state = index.get_initial_state()
        for byte in text.encode("utf-8"):
            state = index.get_next_state(state, byte)
            if state is None:
                return False
        return index.is_final_state(state)

    @staticmethod
    def python_match(regex: str, text: str) -> bool:
        return re.fullmatch(regex, text) is not None

    def _distance_to_final(self, regex: str) -> dict[int, int]:
        """Shortest number of bytes from each state to a final state (reverse breadth-first search)."""
        if regex not in self._distances:
            transitions = self.index(regex).get_transitions()
            reverse: dict[int, list[int]] = {}
            for source, edges in transitions.items():
                for token, target in edges.items():
                    if token != EOS_ID:
                        reverse.setdefault(target, []).append(source)
            finals = list(self.index(regex).get_final_states())
            distance = dict.fromkeys(finals, 0)
            queue = deque(finals)
            while queue:
                state = queue.popleft()
                for source in reverse.get(state, []):
                    if source not in distance:
                        distance[source] = distance[state] + 1
                        queue.append(source)
            self._distances[regex] = distance
        return self._distances[regex]

    def sample(self, regex: str, rng: random.Random, max_bytes: int = 600) -> str:
        """One random text of the regex: random allowed bytes, drifting towards a final state."""
        index, distance = self.index(regex), self._distance_to_final(regex)
        transitions = index.get_transitions()
        state, out = index.get_initial_state(), bytearray()
        while True:
            edges = [(t, s) for t, s in transitions.get(state, {}).items() if t != EOS_ID]
            if index.is_final_state(state) and (not edges or rng.random() < 0.3 or len(out) > max_bytes):
                return out.decode("utf-8")
            if len(out) > max_bytes or rng.random() < 0.4:
                best = min(distance[s] for _, s in edges)
                edges = [(t, s) for t, s in edges if distance[s] == best]
            token, state = rng.choice(edges)
            out.append(token)


def _is_number(text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@pytest.fixture(scope="session")
def automaton() -> ByteAutomaton:
    return ByteAutomaton()


def canonical(value: object, key_order: list[str] | None = None, indent: int | None = None) -> str:
    """The serialization the translator generates: keys in schema order (names in ``key_order`` first,
    the rest in their own order), integral floats as ints, no ASCII escaping; compact or indented."""

    def normalize(v: object) -> object:
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e300:
            return int(v)
        if isinstance(v, list):
            return [normalize(x) for x in v]
        if isinstance(v, dict):
            rank = {k: i for i, k in enumerate(key_order or [])}
            keys = sorted(v, key=lambda k: (0, rank[k]) if k in rank else (1, 0))
            return {k: normalize(v[k]) for k in keys}
        return v

    if indent is None:
        return json.dumps(normalize(value), separators=(",", ":"), ensure_ascii=False)
    return json.dumps(normalize(value), indent=indent, ensure_ascii=False)


def schema_key_order(schema: object) -> list[str]:
    """Property names in the order the schema declares them (depth first), for ``canonical``."""
    order: list[str] = []

    def walk(node: object, in_properties: bool = False) -> None:
        if isinstance(node, dict) and not in_properties:
            for keyword in ("const", "enum"):  # object values are written in their own key order
                values = [node[keyword]] if keyword == "const" and keyword in node else node.get(keyword, [])
                for value in values if isinstance(values, list) else []:
                    walk_value(value)
        if isinstance(node, dict):
            for key, value in node.items():
                if in_properties:
                    order.append(key)
                walk(value, key == "properties" and not in_properties)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    def walk_value(value: object) -> None:
        if isinstance(value, dict):
            order.extend(value)
            for item in value.values():
                walk_value(item)
        elif isinstance(value, list):
            for item in value:
                walk_value(item)

    walk(schema)
    return list(dict.fromkeys(order))


@pytest.fixture(scope="session", name="canonical")
def canonical_fixture():
    return canonical


@pytest.fixture(scope="session", name="schema_key_order")
def schema_key_order_fixture():
    return schema_key_order


@pytest.fixture(scope="session")
def suite_counts():
    """file -> (compiled cases, refused cases) of the official suite, printed at the end (-s)."""
    counts: dict[str, tuple[int, int]] = {}
    yield counts
    if counts:
        total = [sum(c[i] for c in counts.values()) for i in (0, 1)]
        lines = [f"{name}: compiled {c} refused {r}" for name, (c, r) in sorted(counts.items())]
        print("\nJSON-Schema-Test-Suite:", *lines, f"total: compiled {total[0]} refused {total[1]}", sep="\n")


@pytest.fixture(scope="module")
def backend(tokenizer):
    """An llguidance backend over the real SmolLM2 tokenizer, for grammars checked token by token."""
    backend = LlguidanceBackend(tokenizer, len(tokenizer))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def llg_accepts(backend, tokenizer):
    """``llg_accepts(fmt, text)``: the grammar of a response format takes ``text`` token by token (real
    SmolLM2 tokens) and may end there."""

    def accepts(fmt, text: str) -> bool:
        state = backend.new_state(
            backend.submit(backend.prepare(resolve_response_format(fmt))).result(timeout=60)
        )
        for token_id in tokenizer.encode(text, add_special_tokens=False):
            if not state.accept_token(token_id):
                return False
        return state.is_accepting()

    return accepts
