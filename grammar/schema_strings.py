"""Regexes for JSON strings: any character, length bounds, ``format`` values and property names.

One regex "character" is one decoded character: a raw Unicode scalar, a short escape or a ``\\uXXXX``
escape outside the surrogate range (a surrogate pair would be two escapes but one character, which would
break ``minLength``/``maxLength``; characters beyond the BMP are written raw instead). U+10FFFF (a
noncharacter) is never produced raw: the grammar compiler appends it as the end-of-text marker.
"""

from __future__ import annotations

RAW_CHAR = '[^"\\\\\\x00-\\x1f\\U0010ffff]'
_HEX = "[0-9a-fA-F]"
_NON_SURROGATE_U = f"u(?:[0-9a-cA-CefEF]{_HEX}{{3}}|[dD][0-7]{_HEX}{{2}})"
STRING_CHAR = f'(?:{RAW_CHAR}|\\\\(?:["\\\\/bfnrt]|{_NON_SURROGATE_U}))'
STRING_REGEX = f'"{STRING_CHAR}*"'
# In counted repeats (minLength/maxLength) a quote is spelled \u0022, never \": with \" the automaton
# compile time of outlines-core 0.2.14 doubles per counted character (maxLength 15 took seconds).
COUNTED_CHAR = f"(?:{RAW_CHAR}|\\\\(?:[\\\\/bfnrt]|{_NON_SURROGATE_U}))"


def quantified(unit: str, min_count: int, max_count: int | None) -> str:
    """``unit`` repeated between min and max times (max None = unbounded), in portable syntax."""
    if max_count is None:
        if min_count == 0:
            return f"{unit}*"
        if min_count == 1:
            return f"{unit}+"
        return f"{unit}{{{min_count},}}"
    if min_count == max_count:
        return "" if min_count == 0 else (unit if min_count == 1 else f"{unit}{{{min_count}}}")
    if (min_count, max_count) == (0, 1):
        return f"{unit}?"
    return f"{unit}{{{min_count},{max_count}}}"


_REGEX_META = set("\\.+*?()|[]{}^$")


def escape_literal(text: str) -> str:
    """A regex matching exactly ``text``; the syntax is read alike by Python ``re`` and Rust regex."""
    out = []
    for ch in text:
        if ch in _REGEX_META:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _alt(*options: str) -> str:
    return "(?:" + "|".join(options) + ")"


# Calendar dates exactly as ``datetime.date.fromisoformat`` accepts them: year 0001-9999, month lengths,
# 29 February only in leap years (divisible by 4, centuries only when divisible by 400).
_YEAR = _alt("000[1-9]", "00[1-9][0-9]", "0[1-9][0-9]{2}", "[1-9][0-9]{3}")
_LEAP_YEAR = _alt("[0-9]{2}(?:0[48]|[2468][048]|[13579][26])", "(?:0[48]|[2468][048]|[13579][26])00")
_MONTH_DAY = _alt(
    "(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    "(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
    "02-(?:0[1-9]|1[0-9]|2[0-8])",
)
DATE_REGEX = _alt(f"{_YEAR}-{_MONTH_DAY}", f"{_LEAP_YEAR}-02-29")
# RFC 3339 full-time; leap second 60 is never produced (Python's datetime rejects it).
_TIME_OFFSET = _alt("Z", "[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]")
TIME_REGEX = f"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{{1,6}})?{_TIME_OFFSET}"
DATETIME_REGEX = f"{DATE_REGEX}T{TIME_REGEX}"
# Labels of at most 41 characters without "--", written so the automaton stays deterministic (a counted
# class followed by an overlapping one makes outlines-core compile exponentially slowly). At most 4
# labels keep a hostname under the 253-character limit; the last label starts with a letter.
_LABEL = "[A-Za-z0-9](?:-?[A-Za-z0-9]){0,20}"
_TOP_LABEL = "[A-Za-z](?:-?[A-Za-z0-9]){0,20}"
HOSTNAME_REGEX = f"(?:{_LABEL}\\.){{0,3}}{_TOP_LABEL}"
_ATOM = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
EMAIL_REGEX = f"{_ATOM}(?:\\.{_ATOM})*@(?:{_LABEL}\\.){{1,3}}{_TOP_LABEL}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_REGEX = f"{_OCTET}(?:\\.{_OCTET}){{3}}"
# Only the full eight-group form (no "::" compression): a sound subset of RFC 4291 text.
IPV6_REGEX = f"{_HEX}{{1,4}}(?::{_HEX}{{1,4}}){{7}}"
UUID_REGEX = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
# RFC 3986 "scheme://authority/path?query#fragment" with characters that never need more escaping in JSON.
_UNRESERVED = "A-Za-z0-9._~!$&'()*+,;="  # "-" is appended last in each class, where it is literal
_PCHAR = f"(?:[{_UNRESERVED}:@-]|%{_HEX}{{2}})"
URI_REGEX = (
    f"[A-Za-z][A-Za-z0-9+.-]*://(?:[{_UNRESERVED}-]|%{_HEX}{{2}})*(?::[0-9]{{1,5}})?"
    f"(?:/{_PCHAR}*)*(?:\\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?"
)

# format -> (regex of the string content, min chars, max chars or None). The content never contains a
# character that JSON has to escape, so regex characters and string characters coincide.
FORMATS: dict[str, tuple[str, int, int | None]] = {
    "date": (DATE_REGEX, 10, 10),
    "time": (TIME_REGEX, 9, 21),
    "date-time": (DATETIME_REGEX, 20, 32),
    "email": (EMAIL_REGEX, 3, None),
    "hostname": (HOSTNAME_REGEX, 1, 4 * 41 + 3),
    "ipv4": (IPV4_REGEX, 7, 15),
    "ipv6": (IPV6_REGEX, 15, 39),
    "uuid": (UUID_REGEX, 36, 36),
    "uri": (URI_REGEX, 4, None),
}
# Formats JSON Schema defines (and validators may assert) that are not translated: refused when strict.
UNSUPPORTED_FORMATS = frozenset(
    {
        "duration",
        "idn-email",
        "idn-hostname",
        "iri",
        "iri-reference",
        "uri-reference",
        "uri-template",
        "json-pointer",
        "relative-json-pointer",
        "regex",
    }
)


def property_name_regex(excluded: list[str]) -> str:
    """A JSON string key that differs from every name in ``excluded`` after decoding.

    Sound restriction: such keys are written without escape sequences, so each key has one spelling and
    "not equal to a declared name" becomes a finite trie complement over raw characters.
    """
    if not excluded:
        return STRING_REGEX
    return '"' + _complement(sorted(set(excluded))) + '"'


def property_name_regex_size(excluded: list[str]) -> int:
    """An upper bound of ``len(property_name_regex(excluded))``, known before it is built: each node of
    the trie of names costs at most ~50 characters plus ~12 per child (a class entry, its literal)."""
    return max(len(STRING_REGEX), 80 * (sum(len(name) for name in set(excluded)) + 1))


def _complement(words: list[str]) -> str:
    """Raw-character strings that are not in ``words``, built over the trie of ``words`` (sorted).

    Iterative: a name thousands of characters long is a trie that deep. Each trie node gives
    ``(?:|[^excluded first chars]RAW*|c1(child1)|c2(child2)...)``; the empty option only when no word
    ends there, the ``RAW+`` option instead of the class when no word goes on."""
    root: dict = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[None] = True  # a word ends here
    stack = [_start(root)]
    while True:
        node, options, pending = stack[-1]
        if pending:
            ch = pending.pop()
            options.append(escape_literal(ch))  # the child's regex is appended to this entry
            stack.append(_start(node[ch]))
            continue
        regex = "(?:" + "|".join(options) + ")"
        stack.pop()
        if not stack:
            return regex
        stack[-1][1][-1] += regex


def _start(node: dict) -> tuple[dict, list[str], list[str]]:
    """A trie node's frame: (node, its options so far, the children still to expand, last first)."""
    chars = [ch for ch in node if ch is not None]
    options = [] if None in node else [""]
    if chars:
        excluded_class = "".join(_class_char(ch) for ch in chars)
        options.append(f'[^"\\\\\\x00-\\x1f\\U0010ffff{excluded_class}]{RAW_CHAR}*')
    else:
        options.append(f"{RAW_CHAR}+")
    # Such a name can never be spelled with raw characters: nothing to exclude below it.
    pending = [ch for ch in chars if not (ord(ch) < 0x20 or ch in '"\\')]
    return node, options, pending[::-1]


def _class_char(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
