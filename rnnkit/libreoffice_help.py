"""The LibreOffice help as text: Debian's ``libreoffice-help-<lang>`` packages, read offline.

About 35 languages share one tree of HTML pages with the same element ids, which makes the
help both a parallel corpus (the translation app pairs paragraphs by page and id) and a
source of plain sentences in many languages (voice_gender's synthetic training speakers
read them). Packages are fetched with ``apt-get download`` and unpacked, never installed.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

from rnnkit.fetch import apt_package

__all__ = ["help_paragraphs", "help_text_root"]

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr", "param"}
_ID = re.compile(r"^(par_id|hd_id)")


class _ParagraphParser(HTMLParser):
    """Collect the text of every element whose id starts with ``par_id`` / ``hd_id``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.open: list[tuple[str, int, list[str]]] = []  # (id, depth, text parts)
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        # Void elements (<br>, <img>) never close: they must not count as nesting.
        if tag in _VOID:
            return
        self.stack.append(tag)
        ident = dict(attrs).get("id") or ""
        if _ID.match(ident):
            self.open.append((ident, len(self.stack), []))

    def handle_endtag(self, tag):
        if tag in _VOID or tag not in self.stack:
            return
        while self.stack:
            popped = self.stack.pop()
            while self.open and self.open[-1][1] > len(self.stack):
                ident, _, parts = self.open.pop()
                self.found.append((ident, "".join(parts)))
            if popped == tag:
                break

    def handle_data(self, data):
        for _, _, parts in self.open:
            parts.append(data)


def help_text_root(lang: str, version: str | None = None) -> Path:
    """The ``text/`` folder of one language's help (fetched and unpacked on first use).

    Args:
        lang: the help's language code (``es``, ``en-US``, ``cs``, ...).
        version: a Debian version of the package; None takes the candidate.

    Raises:
        FileNotFoundError: the package has no ``help/<lang>/text`` folder.
    """
    package = f"libreoffice-help-{lang.lower()}"
    root = apt_package(package, version) / "usr/share/libreoffice/help" / lang
    if not (root / "text").is_dir():
        raise FileNotFoundError(f"{package} has no help/{lang}/text folder "
                                f"(is {lang!r} the right code?)")
    return root / "text"


def help_paragraphs(path: Path) -> dict[tuple[str, int], str]:
    """Text of every ``par_id*`` / ``hd_id*`` element of one help page.

    Returns:
        ``{(id, occurrence): text}``: embedded sections can repeat an id inside one page, so
        occurrences are numbered in document order (and pair up across languages).
    """
    parser = _ParagraphParser()
    parser.feed(Path(path).read_text(encoding="utf-8", errors="replace"))
    seen: Counter[str] = Counter()
    out: dict[tuple[str, int], str] = {}
    for ident, text in parser.found:
        out[(ident, seen[ident])] = html.unescape(text)
        seen[ident] += 1
    return out
