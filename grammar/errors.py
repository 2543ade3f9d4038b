"""Errors of the grammar package. Every one is a RequestError (a ValueError): it belongs to the one
request whose response format caused it, and each message names what is wrong and what to do."""

from __future__ import annotations

from loomlm.common.errors import RequestError


class GrammarError(RequestError):
    """A response format that cannot be turned into a token automaton."""


class InvalidSchemaError(GrammarError):
    """The JSON Schema itself is malformed (wrong keyword types, dangling ``$ref`` ...)."""

    def __init__(self, message: str, pointer: str = "") -> None:
        self.pointer = pointer
        super().__init__(f"invalid JSON Schema at {pointer or '/'}: {message}")


class UnsupportedSchemaError(GrammarError):
    """A keyword the translator cannot enforce. ``strict=False`` drops it (and post-validates)."""

    def __init__(self, keyword: str, pointer: str, reason: str = "") -> None:
        self.keyword = keyword
        self.pointer = pointer
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"JSON Schema keyword {keyword!r} at {pointer or '/'} cannot be enforced during generation"
            f"{detail}; pass strict=False to drop it and validate the result after generation instead"
        )


class InvalidRegexError(GrammarError):
    """The regex does not parse, or no string over the vocabulary can match it."""


class GrammarCompileError(GrammarError):
    """Compilation failed, ran past its time limit or grew past its size limit."""


class GrammarTooLargeError(GrammarCompileError):
    """A response format past a size or nesting limit, found before the memory is spent: ``what``
    reached ``size`` at JSON Pointer ``pointer``, over ``limit``; ``advice`` says what to do."""

    def __init__(self, what: str, size: int, limit: int, pointer: str, advice: str) -> None:
        self.size = size
        self.limit = limit
        self.pointer = pointer
        super().__init__(f"{what} reached {size} at {pointer or '/'}, over the limit of {limit}; {advice}")
