"""Voice data: the documented real speakers (the app's default), the Fish Fillets NG
recordings and user datasets, as TFDS.

The app's default, ``real`` (:func:`real_fold_clips`): every documented real speaker of
:mod:`.sources`, at most :data:`REAL_PER_SPEAKER` clips each, one split per speaker-disjoint
fold. ``fillets`` (also what these functions read when ``spec`` is None): the dialogue of the game Fish Fillets NG, recorded by actors, from the Debian
packages ``fillets-ng-data-cs`` and ``fillets-ng-data-nl`` (fetched with ``apt-get
download`` + ``dpkg-deb -x`` by :func:`rnnkit.fetch.apt_package`). Files are
``usr/share/games/fillets-ng/sound/<level>/<lang>/<prefix>-<code>-<id>.ogg``; the code
``m`` is the small fish (a female voice), ``v`` the big fish (a male voice); every other
code (side characters) and every file without a ``prefix-code-id`` name is dropped. There
is one speaker per language and gender, so the dataset has one split per language
(``cs``, ``nl``) and evaluation trains on one language and tests on the other.

User data (``--data FORMAT:PATH``) is read by :mod:`.formats` and split by speaker into
train/validation/test.

Extra training speakers (:func:`prepare_extra`): the Festival voices of
``apps/voice_gender/festival.py``, synthesised into the cache and stored as their own
dataset (config ``festival_*``, one split ``extra``). ``train`` adds them to the training
side only; no evaluation reads them.

All audio is decoded and resampled with librosa to 16 kHz mono and stored as int16 PCM.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from rnnkit.errors import DataError

from .features import SAMPLE_RATE
from .formats import DEFAULT_SPEC, REAL_SPEC, Clip, parse_spec, user_class_names, user_clips

log = logging.getLogger(__name__)

FILLETS_PACKAGES = {"cs": "fillets-ng-data-cs", "nl": "fillets-ng-data-nl"}
FILLETS_SOUND_DIR = Path("usr/share/games/fillets-ng/sound")
# File-name code -> label. "m" is the small fish (female actor), "v" the big fish (male).
FILLETS_CODES = {"m": "female", "v": "male"}
GENDER_CLASSES = ("female", "male")


# ----------------------------------------------------------------------------- Fillets


def fillets_label(filename: str) -> str | None:
    """Label of a Fillets sound file from its name, or None for side characters.

    ``<prefix>-<code>-<id>.ogg``: ``m`` -> ``female``, ``v`` -> ``male``. Names with fewer
    than three ``-``-separated parts (e.g. ``cely-m.ogg`` in the credits level) are not
    dialogue lines in that scheme and are dropped too.

    Args:
        filename: the file name (with or without folders).
    """
    stem = Path(filename).name
    if not stem.lower().endswith(".ogg"):
        return None
    parts = stem[: -len(".ogg")].split("-")
    if len(parts) < 3:
        return None
    return FILLETS_CODES.get(parts[1])


def fetch_fillets(languages: Sequence[str] = ("cs", "nl")) -> dict[str, Path]:
    """Fetch and extract the Fillets voice packages; return language -> sound folder root.

    Args:
        languages: which of ``cs``, ``nl`` to fetch.
    """
    from rnnkit.fetch import apt_package

    roots = {}
    for lang in languages:
        root = Path(apt_package(FILLETS_PACKAGES[lang])) / FILLETS_SOUND_DIR
        if not root.is_dir():
            raise DataError(f"{FILLETS_PACKAGES[lang]} has no {FILLETS_SOUND_DIR} folder")
        roots[lang] = root
    return roots


def fillets_clips(roots: dict[str, Path]) -> list[Clip]:
    """List the labelled Fillets clips of each language (side characters dropped).

    Args:
        roots: language -> the extracted ``sound`` folder (see :func:`fetch_fillets`).
    """
    clips = []
    for lang, root in sorted(roots.items()):
        # Most levels are <level>/<lang>/*.ogg; shared lines sit one level deeper
        # (share/<topic>/<lang>/*.ogg).
        for path in sorted(p for p in root.rglob("*.ogg") if p.parent.name == lang):
            label = fillets_label(path.name)
            if label is not None:
                # One actor per language and fish: the speaker is (language, label).
                clips.append(Clip(path, label, f"fillets-{lang}-{label}", lang))
    return clips


# ----------------------------------------------------------------------------- real speakers

REAL_FOLDS = 5  # grouped k-fold over every documented real speaker (``--data real``)
REAL_SPLIT_PREFIX = "fold"  # split ``fold<i>`` holds the clips of fold i's test speakers
# At most this many clips of one speaker (seeded pick): the two Fillets fish and the Queen's
# narrator hold 462-1,930 clips each, half of all 7,403; the cap (3,300 clips left) keeps
# them from dominating training and keeps `make voice-gender` inside its time budget.
REAL_PER_SPEAKER = 200


def real_folds(seed: int = 1337):
    """The real clips (:func:`.sources.real_clips`) and their speaker-disjoint folds.

    Args:
        seed: the tie-breaking seed of :func:`.folds.grouped_folds`.

    Returns:
        (clips, folds): every documented real clip and :data:`REAL_FOLDS` folds in which
        every speaker is tested exactly once.
    """
    from . import folds, sources

    clips = sources.real_clips()
    return clips, folds.grouped_folds(sources.fold_speakers(clips), REAL_FOLDS, seed)


def real_fold_clips(seed: int = 1337) -> list[Clip]:
    """The documented real clips as builder rows, split by the fold that tests their speaker.

    At most :data:`REAL_PER_SPEAKER` clips per speaker (a seeded pick).

    Args:
        seed: the fold seed.

    Raises:
        DataError: a clip's speaker is in no fold (a leak the folds must never allow).
    """
    from . import sources

    clips, folds = real_folds(seed)
    by_speaker: dict[str, list] = defaultdict(list)
    for c in clips:
        by_speaker[c.speaker].append(c)
    clips = []
    for spk in sorted(by_speaker):
        pool = sorted(by_speaker[spk], key=lambda c: str(c.path))
        if len(pool) > REAL_PER_SPEAKER:
            pool = random.Random(f"{seed}-{spk}").sample(pool, REAL_PER_SPEAKER)
        clips.extend(pool)
    fold_of = {spk: f"{REAL_SPLIT_PREFIX}{f.index}" for f in folds for spk in f.test}
    missing = sorted({c.speaker for c in clips} - set(fold_of))
    if missing:
        raise DataError(f"speakers in no test fold: {missing}")
    return sources.as_data_clips(clips, lambda c: fold_of[c.speaker])


def limit_clips(clips: Sequence[Clip], limit: int | None, seed: int = 1337) -> list[Clip]:
    """At most ``limit`` clips per group, balanced over labels, chosen reproducibly.

    Args:
        clips: the clips.
        limit: the maximum per group (None: all).
        seed: selection seed.
    """
    if not limit:
        return list(clips)
    out = []
    by_group: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_group[clip.group].append(clip)
    for group in sorted(by_group):
        by_label: dict[str, list[Clip]] = defaultdict(list)
        for clip in by_group[group]:
            by_label[clip.label].append(clip)
        labels = sorted(by_label)
        rng = random.Random(f"{seed}-{group}")
        for i, label in enumerate(labels):
            share = limit // len(labels) + (1 if i < limit % len(labels) else 0)
            pool = sorted(by_label[label], key=lambda c: str(c.path))
            out.extend(rng.sample(pool, min(share, len(pool))))
    return out


# ----------------------------------------------------------------------------- decoding


def load_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any format librosa reads to mono float32 at ``sample_rate``.

    Args:
        path: the audio file.
        sample_rate: the output rate (16 kHz for the model).

    Raises:
        DataError: the file cannot be decoded, or it holds NaN or infinite samples (a
            floating-point file can; the model's front end cannot use them).
    """
    import librosa

    try:
        audio, _ = librosa.load(str(path), sr=sample_rate, mono=True)
    except Exception as exc:  # librosa raises many types (soundfile, audioread, EOF...)
        if not _finite_samples(path):
            raise DataError(f"{path}: the audio contains NaN or Inf samples") from exc
        raise DataError(f"cannot decode audio file {path}: {exc}") from exc
    if not np.isfinite(audio).all():
        raise DataError(f"{path}: the audio contains NaN or Inf samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _finite_samples(path: str | os.PathLike[str]) -> bool:
    """False only when soundfile reads the file and finds a NaN or infinite sample
    (librosa refuses such files with a generic message)."""
    import soundfile as sf

    try:
        samples, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError):  # a format soundfile does not read: nothing to say
        return True
    return bool(np.isfinite(samples).all())


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 PCM (clipped), the stored form."""
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


# ----------------------------------------------------------------------------- TFDS


@functools.cache
def _builder_module():
    # tensorflow_datasets is slow to import; only the verbs that need it pay for it.
    import tensorflow_datasets as tfds

    class VoiceClipsConfig(tfds.core.BuilderConfig):
        """One dataset: the Fillets default or one user spec, with its class names."""

        def __init__(self, *, spec: str, class_names: Sequence[str], limit: int | None,
                     seed: int, **kwargs):
            super().__init__(**kwargs)
            self.spec = spec
            self.class_names = list(class_names)
            self.limit = limit
            self.seed = seed

    class VoiceClips(tfds.core.GeneratorBasedBuilder):
        """Labelled speech clips at 16 kHz (int16), one split per language or user split."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "Fillets NG cs/nl voices; user formats split by speaker."}
        BUILDER_CONFIGS = [
            VoiceClipsConfig(name="fillets", spec=DEFAULT_SPEC, class_names=GENDER_CLASSES,
                             limit=None, seed=1337,
                             description="Fish Fillets NG dialogue, cs and nl actors"),
        ]

        def _info(self) -> tfds.core.DatasetInfo:
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict({
                    "audio": tfds.features.Audio(dtype=np.int16, sample_rate=SAMPLE_RATE),
                    "label": tfds.features.ClassLabel(names=self.builder_config.class_names),
                    "speaker": tfds.features.Text(),
                    "path": tfds.features.Text(),
                }),
                supervised_keys=("audio", "label"),
                homepage="https://fillets.sourceforge.net/",
            )

        def _split_generators(self, dl_manager):
            del dl_manager  # the sources come through rnnkit.fetch / the user's files
            clips = resolve_clips(self.builder_config.spec, self.builder_config.limit,
                                  self.builder_config.seed)
            groups: dict[str, list[Clip]] = defaultdict(list)
            for clip in clips:
                groups[clip.group].append(clip)
            return {name: self._generate_examples(items) for name, items in sorted(groups.items())}

        def _generate_examples(self, clips: Iterable[Clip]) -> Iterator[tuple[str, dict]]:
            from tqdm import tqdm

            items = list(clips)
            for clip in tqdm(items, desc=f"decoding {items[0].group if items else ''}",
                             unit="clip"):
                audio = load_audio(clip.path)
                yield str(clip.path), {
                    "audio": to_int16(audio),
                    "label": clip.label,
                    "speaker": clip.speaker,
                    "path": str(clip.path),
                }

    return tfds, VoiceClipsConfig, VoiceClips


def resolve_clips(spec: str | None, limit: int | None = None, seed: int = 1337) -> list[Clip]:
    """All clips of a data spec, grouped (language or train/validation/test) and limited.

    Args:
        spec: ``fillets``, ``FORMAT:PATH`` or an extra-voices spec (:func:`extra_spec`).
        limit: at most this many clips per group.
        seed: split/selection seed.
    """
    if spec is not None and spec.startswith(EXTRA_SPEC_PREFIX):
        from . import festival

        root = festival.synthesize_all(int(spec[len(EXTRA_SPEC_PREFIX):]), seed)
        return [Clip(path, sex, speaker, EXTRA_SPLIT)
                for path, sex, speaker in festival.extra_clip_rows(root)]
    fmt, root = parse_spec(spec)
    if fmt == DEFAULT_SPEC:
        clips = fillets_clips(fetch_fillets())
    elif fmt == REAL_SPEC:
        clips = real_fold_clips(seed)
    else:
        clips = user_clips(fmt, root, seed)
    return limit_clips(clips, limit, seed)


def builder(spec: str | None = None, limit: int | None = None, seed: int = 1337):
    """The TFDS builder of a data spec, with ``data_dir=rnnkit.paths.tfds_dir()``.

    The default Fillets data is config ``fillets`` (or ``fillets_limit<N>``); a user spec
    gets a config named after a hash of its path, format, limit and seed, so changing any of
    them builds a new dataset instead of reusing a stale one.

    Args:
        spec: ``fillets`` or ``FORMAT:PATH``.
        limit: at most this many clips per split (tests, ``--quick``).
        seed: user split seed.
    """
    from rnnkit.paths import tfds_dir

    _, config_cls, builder_cls = _builder_module()
    fmt, root = parse_spec(spec)
    if fmt == DEFAULT_SPEC and not limit:
        return builder_cls(config="fillets", data_dir=str(tfds_dir()))
    if fmt == DEFAULT_SPEC:
        name, classes, desc = f"fillets_limit{limit}", GENDER_CLASSES, f"Fillets, {limit}/split"
    elif fmt == REAL_SPEC:
        # What decides the clips and labels in the name, so a change builds a new dataset
        # instead of reusing a stale one: the readers (a source added later), every speaker
        # row's id, sex and group (a speaker admitted, relabelled or regrouped), and the Steel
        # Sky attribution key (its forward-script table and rules decide whose lines are read).
        from .sources import READERS, steel_sky
        from .speakers import SPEAKERS

        key = repr((sorted(READERS), [(s.id, s.sex, s.group) for s in SPEAKERS],
                    steel_sky.attribution_key()))
        readers = hashlib.sha256(key.encode()).hexdigest()[:8]
        name = (f"real_k{REAL_FOLDS}_cap{REAL_PER_SPEAKER}_seed{seed}_src{readers}"
                + (f"_limit{limit}" if limit else ""))
        classes = GENDER_CLASSES
        desc = f"every documented real speaker, {REAL_FOLDS} speaker-disjoint folds"
    else:
        # Class names come from the data; reading a listing is cheap next to decoding.
        classes = user_class_names(fmt, root)
        key = hashlib.sha256(f"{fmt}:{root}:{limit}:{seed}:{classes}".encode()).hexdigest()[:12]
        slug = re.sub(r"[^a-z0-9]+", "_", root.name.lower()).strip("_")[:24] or "data"
        name, desc = f"{fmt}_{slug}_{key}", f"{fmt}:{root}"
    config = config_cls(name=name, spec=spec or DEFAULT_SPEC, class_names=classes, limit=limit,
                        seed=seed, description=desc)
    return builder_cls(config=config, data_dir=str(tfds_dir()))


def prepare(spec: str | None = None, limit: int | None = None, seed: int = 1337):
    """Fetch and build the dataset of a spec (no-op when already built); return the builder.

    Args:
        spec: ``fillets`` or ``FORMAT:PATH``.
        limit: at most this many clips per split.
        seed: user split seed.
    """
    b = builder(spec, limit, seed)
    b.download_and_prepare()
    return b


# ----------------------------------------------------------------------------- extra voices

EXTRA_SPEC_PREFIX = "festival-voices:"  # internal spec of the synthesised extra speakers
EXTRA_SPLIT = "extra"  # their one split: training data only, never a test set


def extra_spec(per_voice: int) -> str:
    """The internal data spec of the Festival extra voices with ``per_voice`` utterances."""
    return f"{EXTRA_SPEC_PREFIX}{per_voice}"


def extra_builder(per_voice: int, seed: int = 1337):
    """The TFDS builder of the Festival extra training voices (split ``extra``).

    Args:
        per_voice: utterances per voice.
        seed: text and prosody seed.
    """
    from rnnkit.paths import tfds_dir

    from . import festival

    _, config_cls, builder_cls = _builder_module()
    name = re.sub(r"[^a-z0-9]+", "_", festival.cache_key(per_voice, seed).lower())
    config = config_cls(name=name, spec=extra_spec(per_voice), class_names=GENDER_CLASSES,
                        limit=None, seed=seed,
                        description=f"Festival voices, {per_voice} utterances each (training only)")
    return builder_cls(config=config, data_dir=str(tfds_dir()))


def prepare_extra(per_voice: int, seed: int = 1337):
    """Synthesise (cached) and build the extra-voice dataset; return its builder.

    Args:
        per_voice: utterances per voice.
        seed: text and prosody seed.

    Raises:
        DataError: Festival or a voice package is missing (the message names it).
    """
    from . import festival

    festival.synthesize_all(per_voice, seed)  # checks Festival and every voice first
    b = extra_builder(per_voice, seed)
    b.download_and_prepare()
    return b


def split_names(b) -> list[str]:
    """The split names of a built dataset (``cs``/``nl``, or ``train``/``validation``/``test``)."""
    return sorted(b.info.splits.keys())


def class_names(b) -> list[str]:
    """The class names of a built dataset, in label-index order."""
    return list(b.info.features["label"].names)
