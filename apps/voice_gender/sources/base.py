"""The record every voice source yields, and the fetch and cache helpers they share."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..speakers import is_reserved

# Bump when a reader's decoding changes: decoded clips are cached under this name.
DECODE_VERSION = "v1"


class SourceError(RuntimeError):
    """A voice source cannot be fetched or read; the message names the package and file."""


def unsigned8_to_int16(body: np.ndarray) -> np.ndarray:
    """Unsigned 8-bit PCM (silence at 128, the old game formats) as int16, losslessly.

    Args:
        body: uint8 samples.
    """
    return ((body.astype(np.int16) - 128) * 256).astype(np.int16)


@dataclass(frozen=True)
class Clip:
    """One clip of a documented real speaker.

    Attributes:
        path: an audio file librosa/soundfile reads (the package's own file, or the decoded
            copy in the cache for game formats).
        label: ``female`` or ``male``, the documented sex of the speaker.
        speaker: the speaker id (a row of :data:`apps.voice_gender.speakers.SPEAKERS`).
        source: the reader's name (``klettres``, ``drascula``, ...).
        language: what is spoken (ISO 639 code).
        group: the fold unit (speakers who may share a voice share a group).
    """

    path: Path
    label: str
    speaker: str
    source: str
    language: str
    group: str


def fetch_package(name: str) -> Path:
    """Fetch and extract a Debian package through :func:`rnnkit.fetch.apt_package`.

    Args:
        name: the package name.

    Raises:
        SourceError: the package is a reserved independent test set, or cannot be fetched.
    """
    if is_reserved(name):
        raise SourceError(f"{name} is reserved as an independent test set: never train, tune "
                          "or evaluate on it")
    from rnnkit.fetch import FetchError, apt_package

    try:
        return Path(apt_package(name))
    except FetchError as exc:
        raise SourceError(str(exc)) from exc


def decoded_dir(source: str, part: str) -> Path:
    """The cache folder of one source's decoded clips: ``<cache>/voice_sources/<version>/...``.

    Args:
        source: the reader's name.
        part: a sub-folder (e.g. the cast or language).
    """
    from rnnkit.paths import cache_dir

    return cache_dir() / "voice_sources" / DECODE_VERSION / source / part


def load(clip: Clip | str | os.PathLike[str], sample_rate: int | None = None) -> np.ndarray:
    """Decode a clip to mono float32 at the app's rate (16 kHz unless given).

    The app's own decoder (:func:`apps.voice_gender.data.load_audio`), so these clips go
    through exactly what the builder does to every other clip.

    Args:
        clip: a :class:`Clip` or an audio path.
        sample_rate: the output rate; the app's ``features.SAMPLE_RATE`` when None.

    Raises:
        SourceError: the file cannot be decoded or holds NaN/Inf samples.
    """
    from ..data import DataError, load_audio
    from ..features import SAMPLE_RATE

    path = clip.path if isinstance(clip, Clip) else Path(clip)
    try:
        return load_audio(path, sample_rate or SAMPLE_RATE)
    except DataError as exc:
        raise SourceError(str(exc)) from exc
