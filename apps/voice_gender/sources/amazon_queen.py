"""Flight of the Amazon Queen, CD version (Debian ``flight-of-the-amazon-queen``).

Everything is packed in ``queen.1c`` (ScummVM's rebuilt format, ``engines/queen/resource.cpp``):
the magic ``QTBL``, a 6-byte version string (``CEM10``: CD, English), 2 bytes, a compression
byte (1 = MP3), a big-endian uint16 entry count, then per entry a 12-byte name, a bundle byte
and big-endian uint32 offset and size. Speech entries are ``*.SB``, each one MP3 stream.

Who speaks (ScummVM ``engines/queen/talk.cpp``): a dialogue file ``<NAME>.DOG`` (20-byte
header, then big-endian int16 fields; the third is its ``talkKey``) plays
``<talkKey:2><line id:4 hex | SSSS | XXXX><P|J><segment>.SB``, where ``P`` is the person Joe
talks to in that dialogue and ``J`` is Joe. ``JOE<n>.SB`` are Joe's descriptions of objects.
Cutaway lines (``C*.SB``) name their speakers in cutaway tables this reader does not parse, so
they are left out. Which dialogue persons are admitted, and why, is in
:mod:`apps.voice_gender.speakers`.

Decoding: the admitted lines are decoded once (soundfile reads MP3 with libsndfile >= 1.1) to
16-bit WAV at their own 11,025 Hz under ``<cache>/voice_sources/<version>/amazon_queen/en/``,
in a temporary folder renamed when complete.
"""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

from .base import Clip, SourceError, decoded_dir, fetch_package
from ..speakers import QUEEN_DIALOGUES, speaker

PACKAGE = "flight-of-the-amazon-queen"
RESOURCE = Path("usr/share/scummvm/flight-of-the-amazon-queen/queen.1c")
DOG_HEADER = 20
_ENTRY = struct.Struct(">12sBII")
_DIALOGUE_LINE = re.compile(r"^(\d\d)([0-9A-F]{4}|SSSS|XXXX)([PJ])(\d+)\.SB$")
_JOE_LINE = re.compile(r"^JOE\d+\.SB$")


def read_index(data: bytes) -> dict[str, tuple[int, int]]:
    """The entry table of a rebuilt ``queen.1c``: name -> (offset, size).

    Args:
        data: the whole file.

    Raises:
        SourceError: not a rebuilt (``QTBL``) resource file, or an entry outside the file.
    """
    if data[:4] != b"QTBL":
        raise SourceError(f"{RESOURCE.name}: no QTBL magic; not a rebuilt Amazon Queen "
                          "resource file")
    (count,) = struct.unpack_from(">H", data, 13)
    index = {}
    for i in range(count):
        raw, _bundle, offset, size = _ENTRY.unpack_from(data, 15 + i * _ENTRY.size)
        name = raw.rstrip(b"\0").decode("ascii")
        if offset + size > len(data):
            raise SourceError(f"{RESOURCE.name}: entry {name} runs past the end of the file")
        index[name] = (offset, size)
    return index


def talk_keys(data: bytes, index: dict[str, tuple[int, int]]) -> dict[int, str]:
    """talkKey -> dialogue file name, read from every ``.DOG`` header.

    Args:
        data: the whole resource file.
        index: from :func:`read_index`.

    Raises:
        SourceError: two dialogue files claim the same talkKey (then file names would not
            identify the speaker).
    """
    keys: dict[int, str] = {}
    for name, (offset, _) in sorted(index.items()):
        if name.endswith(".DOG"):
            # After the header: levelMax, uniqueKey, talkKey (all big-endian int16).
            (key,) = struct.unpack_from(">h", data, offset + DOG_HEADER + 4)
            if key in keys:
                raise SourceError(f"{RESOURCE.name}: talkKey {key} in both {keys[key]} and {name}")
            keys[key] = name
    return keys


def line_character(name: str, keys: dict[int, str]) -> str | None:
    """The admitted character who speaks a ``.SB`` entry, or None.

    Args:
        name: the entry name, e.g. ``"180006P1.SB"``.
        keys: from :func:`talk_keys`.
    """
    if _JOE_LINE.match(name):
        return "joe"
    m = _DIALOGUE_LINE.match(name)
    if m is None:
        return None
    if m.group(3) == "J":
        return "joe"
    dialogue = keys.get(int(m.group(1)))
    return QUEEN_DIALOGUES.get(dialogue) if dialogue else None


def decode(package_root: Path | None = None) -> Path:
    """Decode every admitted speech line to WAV in the cache (once); return the folder.

    Each WAV is named ``<character>__<entry>.wav``.

    Args:
        package_root: the extracted package (fetched when None).

    Raises:
        SourceError: the resource file is missing or unreadable, or a line does not decode.
    """
    import numpy as np
    import soundfile as sf

    from rnnkit.atomic import atomic_directory

    out = decoded_dir("amazon_queen", "en")
    if (out / ".complete").exists():
        return out
    path = (package_root or fetch_package(PACKAGE)) / RESOURCE
    if not path.is_file():
        raise SourceError(f"{PACKAGE} has no {RESOURCE}")
    data = path.read_bytes()
    index = read_index(data)
    keys = talk_keys(data, index)
    count = 0
    with atomic_directory(out, overwrite=True) as tmp:
        for name, (offset, size) in sorted(index.items()):
            character = line_character(name, keys)
            if character is None:
                continue
            try:
                audio, rate = sf.read(io.BytesIO(data[offset:offset + size]), dtype="int16")
            except Exception as exc:  # libsndfile raises its own error types
                raise SourceError(f"{path}: cannot decode {name} as MP3: {exc}") from exc
            if audio.ndim > 1:
                audio = audio.mean(axis=1).astype(np.int16)
            sf.write(tmp / f"{character}__{name[:-3]}.wav", audio, rate, subtype="PCM_16")
            count += 1
        if not count:
            raise SourceError(f"{path}: no admitted speech line found")
        (tmp / ".complete").write_text(f"{count}\n")
    return out


def clips() -> list[Clip]:
    """Every admitted Amazon Queen speech line (decoded into the cache first)."""
    out = []
    for wav in sorted(decode().glob("*.wav")):
        spk = speaker(f"amazon_queen-{wav.stem.split('__', 1)[0]}")
        out.append(Clip(wav, spk.sex, spk.id, "amazon_queen", spk.language, spk.group))
    return out
