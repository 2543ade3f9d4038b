"""The grammar backend seam (vLLM's shape). A backend ``prepare``s a spec in this process (cheap,
bounded: translation and keyword checks, so a refused keyword fails its request at intake),
``submit``s the prepared grammar for compiling off the engine thread (cached, under time and
memory limits) and makes one ``GrammarState`` per request from the compiled grammar.

``auto`` (the default) prefers llguidance for every spec: it compiles real-world schemas in about
a millisecond against hundreds for outlines-core, and its per-token mask cost is tiny next to a
model step (see bench/RESULTS.md, bench/structured.py --corpus). A spec llguidance refuses (a
keyword or regex feature it does not enforce) falls back to the outlines backend, which our own
translator covers; if both refuse, the llguidance error is raised."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from loomlm.grammar.errors import GrammarError
from loomlm.grammar.specs import GrammarSpec
from loomlm.grammar.state import GrammarState

BackendName = Literal["auto", "llguidance", "outlines"]
BACKEND_NAMES = ("auto", "llguidance", "outlines")


@dataclass(frozen=True, slots=True)
class PreparedGrammar:
    """A spec in a backend's own source form, ready to compile."""

    backend: str  # the backend that prepared it, and must compile it
    source: str  # outlines: the regex; llguidance: its grammar (JSON or Lark)
    key: str  # cache key: the backend and the source
    # "keyword at /pointer" that strict=False dropped: the output is validated after generation.
    dropped_keywords: tuple[str, ...] = ()
    end_marker: bool = False  # outlines only: compile as (?:regex)END_MARKER


class GrammarBackend(Protocol):
    name: str

    def prepare(self, spec: GrammarSpec) -> PreparedGrammar:
        """The spec in this backend's source form; a GrammarError (UnsupportedSchemaError naming the
        keyword and its pointer, ...) when this backend cannot enforce it."""

    def submit(self, prepared: PreparedGrammar) -> Future[Any]:
        """Compile off the engine thread into this backend's compiled grammar (opaque to the
        engine); the Future fails with a GrammarCompileError on a compile error, past the time
        limit or past the memory limit."""

    def new_state(self, compiled: Any) -> GrammarState:
        """A fresh per-request matcher at the grammar's start."""

    def close(self) -> None: ...


def prepare_with(backends: dict[str, GrammarBackend], choice: str, spec: GrammarSpec) -> PreparedGrammar:
    """Prepare ``spec`` with the chosen backend, or under ``auto`` with llguidance and then outlines
    (see the module docstring for why)."""
    if choice != "auto":
        return backends[choice].prepare(spec)
    try:
        return backends["llguidance"].prepare(spec)
    except GrammarError as llguidance_error:
        try:
            return backends["outlines"].prepare(spec)
        except GrammarError:
            raise llguidance_error from None
