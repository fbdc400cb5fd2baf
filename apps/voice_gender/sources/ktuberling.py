"""KTuberling single words (Debian ``ktuberling-data``), only where a document names the voice.

The package ships no credits. The KTuberling source tree does for some languages: its
``sounds/de/README`` at commit 63fe5cb (2022-10-17, the state Debian's 4:22.12.3 packages)
says Helmut Pozimski recorded the German files. That README is not in the Debian package, so
the reader checks that the package's German files are exactly the ones it documents (the
same git blob hashes, summarised in :data:`DOCUMENTED_SETS`) and refuses them otherwise: a
later release replaced two German files with someone else's recordings.

Files: ``usr/share/ktuberling/sounds/<lang>/*.ogg`` (Ogg Vorbis, one word each), read in
place like the Fillets clips.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .base import Clip, SourceError, fetch_package
from ..speakers import speaker

PACKAGE = "ktuberling-data"
SOUNDS_DIR = Path("usr/share/ktuberling/sounds")
# language -> (file count, sha256 over the sorted "name git-blob-sha1" lines) of the set the
# document names.
DOCUMENTED_SETS = {
    "de": (72, "c76021e84e26d485f8aec4d432ecb955763bded47ac7bded1cde93ab7fc1a90e"),
}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's bytes (what ``git hash-object`` prints).

    Args:
        data: the file content.
    """
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def set_digest(files: list[Path]) -> str:
    """sha256 over the sorted ``"<name> <git blob sha1>"`` lines of a set of files.

    Args:
        files: the files.
    """
    lines = sorted(f"{p.name} {git_blob_sha1(p.read_bytes())}" for p in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def clips(root: Path | None = None) -> list[Clip]:
    """The documented KTuberling sets.

    Args:
        root: the extracted package root (fetched when None).

    Raises:
        SourceError: a documented set is missing or differs from the documented files.
    """
    root = (root or fetch_package(PACKAGE)) / SOUNDS_DIR
    out = []
    for lang, (count, digest) in sorted(DOCUMENTED_SETS.items()):
        files = sorted((root / lang).glob("*.ogg"))
        if len(files) != count or set_digest(files) != digest:
            raise SourceError(f"{PACKAGE}: {SOUNDS_DIR / lang} holds {len(files)} files that are "
                              f"not the {count} its recording credit documents; refusing to "
                              "label them")
        spk = speaker(f"ktuberling-{lang}")
        out.extend(Clip(p, spk.sex, spk.id, "ktuberling", spk.language, spk.group) for p in files)
    return out
