"""Drascula: The Vampire Strikes Back, English and Spanish voice casts (Debian ``drascula``,
``drascula-spanish``).

Speech lines are ``usr/share/scummvm/drascula/<cast>/<PREFIX><n>.ALS``: raw unsigned 8-bit
mono PCM at 11,025 Hz between a 32-byte header and a 32-byte trailer (both the 0x80 silence
byte in these files). The prefix is the character (ScummVM's ``engines/drascula/talk.cpp``:
each ``talk_*`` function builds its file name from one prefix); the mapping and each
character's documented sex are in :mod:`apps.voice_gender.speakers`. Sound effects (``S``),
the unattributed ``F`` files and the musician (``E``) are left out, and so are the
Spanish package's links to English recordings (:func:`speech_files`).

Decoding: each cast's lines are converted once to 16-bit WAV at the native 11,025 Hz
(``(byte - 128) * 256``, lossless) under ``<cache>/voice_sources/<version>/drascula/<cast>/``,
written into a temporary folder that is renamed when complete. Resampling to the model's
rate is left to the app's builder, like every other source.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .base import Clip, SourceError, decoded_dir, fetch_package, unsigned8_to_int16
from ..speakers import DRASCULA_PREFIXES, speaker

PACKAGES = {"en": "drascula", "es": "drascula-spanish"}
DATA_DIR = Path("usr/share/scummvm/drascula")
ALS_RATE = 11_025
ALS_HEADER = 32
ALS_TRAILER = 32
_NAME = re.compile(r"^([A-Z]*)(\d+)\.ALS$", re.IGNORECASE)


def parse_name(filename: str) -> tuple[str, int] | None:
    """Split an ``.ALS`` file name into (upper-case prefix, line number), or None.

    Args:
        filename: e.g. ``"BJ12.ALS"`` -> ``("BJ", 12)``; ``"463.ALS"`` -> ``("", 463)``.
    """
    m = _NAME.match(Path(filename).name)
    return (m.group(1).upper(), int(m.group(2))) if m else None


def read_als(path: Path) -> np.ndarray:
    """Read one ``.ALS`` speech file as int16 PCM at 11,025 Hz.

    Args:
        path: the file.

    Raises:
        SourceError: the file is too short to hold a header, a trailer and any audio.
    """
    raw = path.read_bytes()
    if len(raw) <= ALS_HEADER + ALS_TRAILER:
        raise SourceError(f"{path}: {len(raw)} bytes, too short for an ALS speech file")
    body = np.frombuffer(raw[ALS_HEADER:len(raw) - ALS_TRAILER], dtype=np.uint8)
    return unsigned8_to_int16(body)


def speech_files(folder: Path) -> list[Path]:
    """The documented characters' ``.ALS`` files of one cast folder, sorted.

    Debian's ``drascula-spanish`` replaces three files that were byte-identical in both
    releases (``366``, ``B61``, ``B62``) by symbolic links to ``../en/``: those are the
    English cast's recordings, read with that cast, so links leading out of the folder are
    skipped (otherwise one recording would sit in two fold groups).

    Args:
        folder: ``usr/share/scummvm/drascula/<cast>``.
    """
    out = []
    for path in sorted(folder.iterdir()):
        parsed = parse_name(path.name)
        if parsed is None or parsed[0] not in DRASCULA_PREFIXES:
            continue
        if path.is_symlink() and path.resolve().parent != folder.resolve():
            continue
        out.append(path)
    return out


def decode_cast(cast: str, package_root: Path | None = None) -> Path:
    """Decode one cast's speech files to WAV in the cache (once) and return the folder.

    Args:
        cast: ``"en"`` or ``"es"``.
        package_root: the extracted package (fetched when None).

    Raises:
        SourceError: unknown cast, missing folder, or no speech file found.
    """
    import soundfile as sf

    from rnnkit.atomic import atomic_directory

    if cast not in PACKAGES:
        raise SourceError(f"drascula: unknown cast {cast!r}; expected one of {sorted(PACKAGES)}")
    out = decoded_dir("drascula", cast)
    if (out / ".complete").exists():
        return out
    root = (package_root or fetch_package(PACKAGES[cast])) / DATA_DIR / cast
    if not root.is_dir():
        raise SourceError(f"{PACKAGES[cast]} has no {DATA_DIR / cast} folder")
    files = speech_files(root)
    if not files:
        raise SourceError(f"{root}: no speech .ALS files")
    with atomic_directory(out, overwrite=True) as tmp:
        for path in files:
            sf.write(tmp / (path.stem.upper() + ".wav"), read_als(path), ALS_RATE,
                     subtype="PCM_16")
        (tmp / ".complete").write_text(f"{len(files)}\n")
    return out


def clips(casts: tuple[str, ...] = ("en", "es")) -> list[Clip]:
    """Every documented speech line of the given casts (decoded into the cache first).

    Args:
        casts: which casts to read.
    """
    out = []
    for cast in casts:
        folder = decode_cast(cast)
        for path in sorted(folder.glob("*.wav")):
            parsed = parse_name(path.stem + ".ALS")
            if parsed is None or parsed[0] not in DRASCULA_PREFIXES:
                continue
            spk = speaker(f"drascula-{cast}-{DRASCULA_PREFIXES[parsed[0]]}")
            out.append(Clip(path, spk.sex, spk.id, "drascula", spk.language, spk.group))
    return out
