"""report.html's one HTML builder: every value reaches the page through `tag`, escaped.

A job folder is data anyone can craft: its status, objective, overrides, folder name and error
may hold `<img onerror=...>`. Text is escaped wherever it is placed, in elements and in
attributes alike; only `Html` (made here, from tags and escaped text, or by `trusted` from the
page's own constants) passes unchanged, and a URL attribute takes nothing else, so no value
read from disk can add markup, an event handler or a link. Kept free of torch.
"""

import html
import re
import unicodedata
from collections.abc import Iterable

NAME = re.compile(r"[a-z][a-z0-9]*")  # tag names: ours, never from data
ATTRIBUTE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")  # attribute names: http-equiv, data-x
VOID = frozenset({"img", "meta", "input"})  # elements without an end tag
URLS = frozenset({"src", "href"})  # attributes whose value must be ours (`trusted`)
# Shown as \u202e and the like: text that would reorder or hide what follows it on the page.
HIDDEN = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class Html(str):
    """Text that is HTML already: built by `tag`/`join`, or one of the page's constants."""


def trusted(constant: str) -> Html:
    """One of the page's own constants (CSS, a data: URL we encoded) as HTML; never data."""
    return Html(constant)


def printable(text: str) -> str:
    """`text` with control characters, lone surrogates (undecodable bytes of a file name) and
    direction marks shown as escapes: nothing shown can move the cursor or reorder a line."""
    if text.isprintable():
        return text
    return "".join(f"\\u{ord(char):04x}" if hidden(char) else char for char in text)


def hidden(char: str) -> bool:
    """Whether `char` acts instead of showing (a line break or tab shows as space: kept)."""
    kind = unicodedata.category(char)
    return char in HIDDEN or kind == "Cs" or (kind == "Cc" and char not in "\n\t")


def escape(value: object) -> Html:
    """`value` as HTML text: printable, and `& < > " '` escaped (safe in attributes too)."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(printable(str(value)), quote=True))


def join(parts: Iterable[object], separator: str = "") -> Html:
    """The parts one after the other, each escaped unless it is `Html`."""
    return Html(escape(separator).join(escape(part) for part in parts))


def tag(name: str, *children: object, **attributes: object) -> Html:
    """<name attributes>children</name>; `class_` gives the class attribute, `data_table`
    data-table (an underscore is a hyphen)."""
    if not NAME.fullmatch(name):
        raise ValueError(f"not a tag name: {name!r}")
    spelled = []
    for key, value in attributes.items():
        key = key.rstrip("_").replace("_", "-")
        if not ATTRIBUTE.fullmatch(key) or key.startswith("on"):  # no event handler, ever
            raise ValueError(f"not an attribute we write: {key!r}")
        if key in URLS and not isinstance(value, Html):
            raise ValueError(f"{key} takes a URL we made, not text: {str(value)[:40]!r}")
        # Escaped even where it is Html: a quote in it would end the attribute.
        spelled.append(f' {key}="{html.escape(printable(str(value)), quote=True)}"')
    opening = f"<{name}{''.join(spelled)}>"
    if name in VOID:
        return Html(opening)
    return Html(f"{opening}{join(children)}</{name}>")
