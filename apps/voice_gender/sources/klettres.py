"""KLettres letters and syllables (Debian ``klettres-data``), one credited voice per language.

Files: ``usr/share/klettres/<lang>/{alpha,syllab}/*.ogg`` (Ogg Vorbis, 44.1 kHz, 1-2 s each),
indexed by ``<lang>/sounds.xml``. Only the files ``sounds.xml`` references are read (a few
languages ship unreferenced leftovers), each once even when two entries share a file. Which
languages are admitted, and why the others are not, is in :mod:`apps.voice_gender.speakers`.
The Ogg files are read as they are: the app's builder decodes them like the Fillets clips.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import Clip, SourceError, fetch_package
from ..speakers import SPEAKERS

PACKAGE = "klettres-data"
SOUNDS_DIR = Path("usr/share/klettres")
_FILE_ATTR = re.compile(r'\bfile\s*=\s*"([^"]+)"')

# Admitted languages -> speaker ids, straight from the documented table.
LANGUAGES = {s.id.removeprefix("klettres-"): s for s in SPEAKERS if s.source == "klettres"}


def indexed_files(root: Path, lang: str) -> list[Path]:
    """The existing audio files ``<lang>/sounds.xml`` references, sorted, without duplicates.

    Args:
        root: the extracted ``usr/share/klettres`` folder.
        lang: the language folder, e.g. ``"cs"``.

    Raises:
        SourceError: the index is missing or references no existing file.
    """
    index = root / lang / "sounds.xml"
    if not index.is_file():
        raise SourceError(f"{PACKAGE}: no {SOUNDS_DIR / lang / 'sounds.xml'}")
    # A regex, not an XML parser: some indexes are not well-formed (ml's root element is
    # misspelt and closes differently), but every entry is a plain file="..." attribute.
    names = sorted(set(_FILE_ATTR.findall(index.read_text(encoding="utf-8", errors="replace"))))
    files = [root / name for name in names if (root / name).is_file()]
    if not files:
        raise SourceError(f"{PACKAGE}: {index} references no existing audio file")
    return files


def clips(root: Path | None = None) -> list[Clip]:
    """Every clip of the admitted KLettres languages.

    Args:
        root: the extracted package root (fetched with ``apt_package`` when None).
    """
    root = (root or fetch_package(PACKAGE)) / SOUNDS_DIR
    out = []
    for lang, spk in sorted(LANGUAGES.items()):
        for path in indexed_files(root, lang):
            out.append(Clip(path, spk.sex, spk.id, "klettres", spk.language, spk.group))
    return out
