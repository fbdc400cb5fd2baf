"""Real voices from Debian packages, one reader per source, each speaker documented.

Readers (all fetch through :func:`rnnkit.fetch.apt_package`, cached under ``$RNNKIT_CACHE``):

* ``fillets``  Fish Fillets NG, Czech and Dutch actors (4 speakers).
* ``klettres`` KLettres letters and syllables, one credited voice per language.
* ``drascula`` Drascula, the English and Spanish casts, characters by file prefix.
* ``amazon_queen`` Flight of the Amazon Queen (CD), Joe and the documented dialogue persons.
* ``ktuberling`` KTuberling words, only the German set (its recorder is named in the source tree).
* ``steel_sky`` Beneath a Steel Sky (CD), the characters the game's scripts make speak.

Each returns :class:`Clip` records (path, label, speaker, source, language, group). Who is
admitted, with the document that gives each sex, is :mod:`apps.voice_gender.speakers`;
:func:`provenance_rows` adds clip counts and minutes for the table in docs/voice_gender.md.

For training code:

* :func:`real_clips` -> every usable clip (optionally some sources only);
* :func:`load` -> one clip as mono float32 at 16 kHz;
* :func:`records` -> ``(audio, label, speaker, source, language)`` tuples;
* :func:`as_data_clips` -> :class:`apps.voice_gender.data.Clip` rows for the TFDS builder;
* :func:`fold_speakers` + :func:`apps.voice_gender.folds.grouped_folds` -> speaker-disjoint folds.

``python -m apps.voice_gender.sources`` fetches everything and prints the provenance table.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..speakers import SPEAKERS, Speaker, speaker
from . import amazon_queen, drascula, fillets, klettres, ktuberling, steel_sky
from .base import Clip, SourceError, load

__all__ = [
    "READERS", "Clip", "ProvenanceRow", "SourceError", "as_data_clips", "fold_speakers", "load",
    "provenance_markdown", "provenance_rows", "real_clips", "records", "summary_markdown",
]

READERS: dict[str, Callable[[], list[Clip]]] = {
    "fillets": fillets.clips,
    "klettres": klettres.clips,
    "drascula": drascula.clips,
    "amazon_queen": amazon_queen.clips,
    "ktuberling": ktuberling.clips,
    "steel_sky": steel_sky.clips,
}


def real_clips(sources: Sequence[str] | None = None) -> list[Clip]:
    """Every usable clip of the documented real speakers, fetching and decoding as needed.

    Args:
        sources: reader names (keys of :data:`READERS`); all when None.

    Raises:
        SourceError: an unknown source name, or a source that cannot be read.
    """
    names = list(READERS) if sources is None else list(sources)
    unknown = [n for n in names if n not in READERS]
    if unknown:
        raise SourceError(f"unknown voice source(s) {unknown}; known: {sorted(READERS)}")
    out: list[Clip] = []
    for name in names:
        got = READERS[name]()
        if not got:
            raise SourceError(f"voice source {name!r} yielded no clip")
        for clip in got:
            # Every label must be the documented one: a reader cannot invent a speaker.
            if speaker(clip.speaker).sex != clip.label:
                raise SourceError(f"{clip.path}: label {clip.label} disagrees with the "
                                  f"documented sex of {clip.speaker}")
        out.extend(got)
    return out


def records(clips: Sequence[Clip], sample_rate: int | None = None
            ) -> Iterator[tuple[np.ndarray, str, str, str, str]]:
    """Decode clips one by one: ``(audio float32 mono, label, speaker, source, language)``.

    Args:
        clips: from :func:`real_clips`.
        sample_rate: output rate (the app's 16 kHz when None).
    """
    for clip in clips:
        yield load(clip, sample_rate), clip.label, clip.speaker, clip.source, clip.language


def as_data_clips(clips: Sequence[Clip], split_of: Callable[[Clip], str] | None = None):
    """Convert to the app's TFDS-builder rows (:class:`apps.voice_gender.data.Clip`).

    Args:
        clips: from :func:`real_clips`.
        split_of: the split (the builder's ``group``) of each clip; the source name when None.
    """
    from .. import data

    split_of = split_of or (lambda c: c.source)
    return [data.Clip(c.path, c.label, c.speaker, split_of(c)) for c in clips]


def fold_speakers(clips: Sequence[Clip]) -> list[Speaker]:
    """The documented speakers that have clips, in table order (the input of ``grouped_folds``).

    Args:
        clips: from :func:`real_clips`.
    """
    present = {c.speaker for c in clips}
    return [s for s in SPEAKERS if s.id in present]


@dataclass(frozen=True)
class ProvenanceRow:
    """One line of the provenance table: a speaker and what the package holds of them."""

    speaker: Speaker
    clips: int
    minutes: float
    median_seconds: float


def _duration(path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


def provenance_rows(clips: Sequence[Clip]) -> list[ProvenanceRow]:
    """Clip count, minutes and median clip length per speaker (from file headers, no decode).

    Args:
        clips: from :func:`real_clips`.
    """
    durations: dict[str, list[float]] = defaultdict(list)
    for c in clips:
        durations[c.speaker].append(_duration(c.path))
    return [ProvenanceRow(s, len(durations[s.id]), sum(durations[s.id]) / 60.0,
                          float(np.median(durations[s.id])))
            for s in fold_speakers(clips)]


def provenance_markdown(rows: Sequence[ProvenanceRow]) -> str:
    """The provenance table as Markdown (the one in docs/voice_gender.md), notes below it.

    Args:
        rows: from :func:`provenance_rows`.
    """
    lines = ["| speaker | package | language | sex | document | clips | minutes | fold group |",
             "|---|---|---|---|---|---|---|---|"]
    notes = {}
    for r in rows:
        s = r.speaker
        lines.append(f"| `{s.id}` | `{s.package}` | {s.language} | {s.sex} | {s.document} | "
                     f"{r.clips} | {r.minutes:.1f} | `{s.group}` |")
        if s.note:
            notes.setdefault(s.note, []).append(s.id)
    if notes:
        lines.append("")
        for note, ids in notes.items():
            lines.append(f"- {', '.join(f'`{i}`' for i in ids)}: {note}.")
    return "\n".join(lines)


def summary_markdown(rows: Sequence[ProvenanceRow]) -> str:
    """Speakers, clips and minutes per source and sex, as a Markdown table.

    Args:
        rows: from :func:`provenance_rows`.
    """
    agg: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for r in rows:
        a = agg[r.speaker.source, r.speaker.sex]
        a[0] += 1
        a[1] += r.clips
        a[2] += r.minutes
    lines = ["| source | sex | speakers | clips | minutes |", "|---|---|---|---|---|"]
    for (source, sex), (n, clips, minutes) in sorted(agg.items()):
        lines.append(f"| {source} | {sex} | {n} | {clips} | {minutes:.1f} |")
    tot = [sum(a[i] for a in agg.values()) for i in range(3)]
    lines.append(f"| all | both | {tot[0]} | {tot[1]} | {tot[2]:.1f} |")
    return "\n".join(lines)
