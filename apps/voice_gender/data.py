"""Voice data: the Fish Fillets NG recordings (default) and user datasets, as TFDS.

Default data: the dialogue of the game Fish Fillets NG, recorded by actors, from the Debian
packages ``fillets-ng-data-cs`` and ``fillets-ng-data-nl`` (fetched with ``apt-get
download`` + ``dpkg-deb -x`` by :func:`rnnkit.fetch.apt_package`). Files are
``usr/share/games/fillets-ng/sound/<level>/<lang>/<prefix>-<code>-<id>.ogg``; the code
``m`` is the small fish (a female voice), ``v`` the big fish (a male voice); every other
code (side characters) and every file without a ``prefix-code-id`` name is dropped. There
is one speaker per language and gender, so the dataset has one split per language
(``cs``, ``nl``) and evaluation trains on one language and tests on the other.

User data (``--data FORMAT:PATH``), always split by speaker into train/validation/test:

* ``folder:ROOT``      ``ROOT/<class>/**/<audio>``: the classes are the sub-folder names
  (``male``/``female``, or any classes, e.g. bird species). The speaker is the first
  folder below the class folder when files are nested (``ROOT/male/spk01/a.wav``),
  otherwise each file counts as its own speaker.
* ``csv:FILE``         a CSV with header ``path,label,speaker`` (paths relative to the CSV).
* ``commonvoice:DIR``  Mozilla Common Voice: ``DIR/validated.tsv`` (``gender`` column:
  ``male``/``female`` or ``male_masculine``/``female_feminine``) + ``DIR/clips/*.mp3``;
  the speaker is ``client_id``.
* ``voxceleb1:DIR``    ``DIR/vox1_meta.csv`` (tab-separated, ``Gender`` m/f) +
  ``DIR/wav/idNNNNN/<video>/<n>.wav``.
* ``librispeech:DIR``  ``DIR/SPEAKERS.TXT`` (``SEX`` column) + ``DIR/<subset>/<spk>/<ch>/*.flac``.
* ``vctk:DIR``         ``DIR/speaker-info.txt`` + ``DIR/wav48*/p<ID>/*``.
* ``timit:DIR``        ``DIR/{TRAIN,TEST}/DR*/<F|M><spk>/*.WAV`` (speaker folder starts
  with F or M).

Extra training speakers (:func:`prepare_extra`): the Festival voices of
``apps/voice_gender/festival.py``, synthesised into the cache and stored as their own
dataset (config ``festival_*``, one split ``extra``). ``train`` adds them to the training
side only; no evaluation reads them.

All audio is decoded and resampled with librosa to 16 kHz mono and stored as int16 PCM.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apps.voice_gender.features import SAMPLE_RATE

log = logging.getLogger(__name__)

FILLETS_PACKAGES = {"cs": "fillets-ng-data-cs", "nl": "fillets-ng-data-nl"}
FILLETS_SOUND_DIR = Path("usr/share/games/fillets-ng/sound")
# File-name code -> label. "m" is the small fish (female actor), "v" the big fish (male).
FILLETS_CODES = {"m": "female", "v": "male"}
GENDER_CLASSES = ("female", "male")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aiff", ".aif", ".au", ".sph")
USER_FORMATS = ("folder", "csv", "commonvoice", "voxceleb1", "librispeech", "vctk", "timit")
DEFAULT_SPEC = "fillets"


class DataError(ValueError):
    """Bad data spec or unusable data; the message says what and where."""


@dataclass(frozen=True)
class Clip:
    """One labelled recording.

    Attributes:
        path: the audio file.
        label: the class name.
        speaker: who speaks (splits never share a speaker).
        group: the Fillets language or the user split the clip was assigned to.
    """

    path: Path
    label: str
    speaker: str
    group: str


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


# ----------------------------------------------------------------------------- user data


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _gender(value: str) -> str | None:
    v = value.strip().lower()
    if v in ("m", "male", "male_masculine", "man"):
        return "male"
    if v in ("f", "female", "female_feminine", "woman"):
        return "female"
    return None


def _folder_clips(root: Path) -> list[Clip]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"folder:{root} needs at least two class folders ROOT/<class>/, "
                        f"found {classes}")
    clips = []
    for name in classes:
        class_dir = root / name
        for path in _audio_files(class_dir):
            rel = path.relative_to(class_dir)
            speaker = rel.parts[0] if len(rel.parts) > 1 else rel.stem
            clips.append(Clip(path, name, f"{name}/{speaker}", ""))
    return clips


def _csv_clips(csv_path: Path) -> list[Clip]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label", "speaker"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{csv_path}: CSV header must have path,label,speaker; "
                            f"missing {sorted(missing)}")
        clips = []
        for line, row in enumerate(reader, start=2):
            if not row["path"] or not row["label"]:
                raise DataError(f"{csv_path}:{line}: empty path or label")
            path = Path(row["path"])
            if not path.is_absolute():
                path = csv_path.parent / path
            clips.append(Clip(path, row["label"].strip(), row["speaker"].strip() or str(path), ""))
    return clips


def _commonvoice_clips(root: Path) -> list[Clip]:
    tsv = root / "validated.tsv"
    if not tsv.exists():
        raise DataError(f"commonvoice:{root}: no validated.tsv")
    clips = []
    with open(tsv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            label = _gender(row.get("gender") or "")
            if label is not None and row.get("path"):
                clips.append(Clip(root / "clips" / row["path"], label, row["client_id"], ""))
    return clips


def _voxceleb1_clips(root: Path) -> list[Clip]:
    meta = root / "vox1_meta.csv"
    if not meta.exists():
        raise DataError(f"voxceleb1:{root}: no vox1_meta.csv")
    genders = {}
    with open(meta, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = [h.strip() for h in next(reader)]
        id_col, g_col = header.index("VoxCeleb1 ID"), header.index("Gender")
        for row in reader:
            if len(row) > max(id_col, g_col):
                genders[row[id_col].strip()] = _gender(row[g_col])
    clips = []
    wav_root = root / "wav" if (root / "wav").is_dir() else root
    for spk_dir in sorted(p for p in wav_root.iterdir() if p.is_dir()):
        label = genders.get(spk_dir.name)
        if label:
            clips.extend(Clip(p, label, spk_dir.name, "") for p in _audio_files(spk_dir))
    return clips


def _librispeech_clips(root: Path) -> list[Clip]:
    speakers_txt = root / "SPEAKERS.TXT"
    if not speakers_txt.exists():
        raise DataError(f"librispeech:{root}: no SPEAKERS.TXT")
    sex = {}
    for line in speakers_txt.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(";") or "|" not in line:
            continue
        fields = [x.strip() for x in line.split("|")]
        sex[fields[0]] = _gender(fields[1])
    clips = []
    for path in sorted(root.rglob("*.flac")):
        spk = path.parent.parent.name
        if sex.get(spk):
            clips.append(Clip(path, sex[spk], spk, ""))
    return clips


def _vctk_clips(root: Path) -> list[Clip]:
    info = root / "speaker-info.txt"
    if not info.exists():
        raise DataError(f"vctk:{root}: no speaker-info.txt")
    sex = {}
    for line in info.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            spk = fields[0] if fields[0].startswith("p") else f"p{fields[0]}"
            sex[spk] = _gender(fields[2])
    clips = []
    for wav_dir in sorted(p for p in root.glob("wav48*") if p.is_dir()):
        for spk_dir in sorted(p for p in wav_dir.iterdir() if p.is_dir()):
            if sex.get(spk_dir.name):
                clips.extend(Clip(p, sex[spk_dir.name], spk_dir.name, "")
                             for p in _audio_files(spk_dir))
    return clips


def _timit_clips(root: Path) -> list[Clip]:
    clips = []
    for path in _audio_files(root):
        spk = path.parent.name
        label = {"F": "female", "M": "male"}.get(spk[:1].upper())
        if label and path.suffix.lower() in (".wav", ".sph"):
            clips.append(Clip(path, label, spk.upper(), ""))
    return clips


_READERS = {
    "folder": _folder_clips,
    "csv": _csv_clips,
    "commonvoice": _commonvoice_clips,
    "voxceleb1": _voxceleb1_clips,
    "librispeech": _librispeech_clips,
    "vctk": _vctk_clips,
    "timit": _timit_clips,
}


def parse_spec(spec: str | None) -> tuple[str, Path | None]:
    """Split a ``--data`` value into (format, path); ``None``/``fillets`` is the default.

    Args:
        spec: ``fillets`` or ``FORMAT:PATH``.

    Raises:
        DataError: unknown format or missing path.
    """
    if spec is None or spec == DEFAULT_SPEC:
        return DEFAULT_SPEC, None
    fmt, sep, path = spec.partition(":")
    if not sep or fmt not in _READERS:
        raise DataError(f"--data {spec!r}: expected 'fillets' or FORMAT:PATH with FORMAT one "
                        f"of {', '.join(USER_FORMATS)}")
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DataError(f"--data {spec!r}: {root} does not exist")
    return fmt, root


def split_by_speaker(
    clips: Sequence[Clip], seed: int = 1337, fractions: tuple[float, float] = (0.15, 0.15)
) -> list[Clip]:
    """Assign every clip to ``train``/``validation``/``test`` so no speaker is in two splits.

    Speakers are grouped by their majority label and each label's speakers are shuffled
    (seeded) and cut by ``fractions`` (validation, test), at least one speaker each when
    the label has three or more, so every split sees every class when that is possible.

    Args:
        clips: clips with ``group`` unset.
        seed: shuffle seed.
        fractions: (validation, test) shares of each label's speakers.
    """
    by_speaker: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_speaker[clip.speaker].append(clip)
    speakers_of: dict[str, list[str]] = defaultdict(list)
    for spk, items in by_speaker.items():
        speakers_of[Counter(c.label for c in items).most_common(1)[0][0]].append(spk)
    split_of = {}
    for label in sorted(speakers_of):
        spks = sorted(speakers_of[label])
        random.Random(f"{seed}-{label}").shuffle(spks)
        n = len(spks)
        n_val = max(1, round(n * fractions[0])) if n >= 3 else 0
        n_test = max(1, round(n * fractions[1])) if n >= 2 else 0
        for i, spk in enumerate(spks):
            split_of[spk] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
    return [Clip(c.path, c.label, c.speaker, split_of[c.speaker]) for c in clips]


def user_clips(fmt: str, root: Path, seed: int = 1337) -> list[Clip]:
    """Read a user dataset and split it by speaker.

    Args:
        fmt: one of :data:`USER_FORMATS`.
        root: the file or folder given after ``FORMAT:``.
        seed: split seed.

    Raises:
        DataError: nothing usable found, or fewer than two classes.
    """
    clips = _READERS[fmt](root)
    if not clips:
        raise DataError(f"{fmt}:{root}: no labelled audio files found")
    missing = [c.path for c in clips[:50] if not c.path.exists()]
    if missing:
        raise DataError(f"{fmt}:{root}: audio file not found: {missing[0]}")
    labels = sorted({c.label for c in clips})
    if len(labels) < 2:
        raise DataError(f"{fmt}:{root}: need at least two classes, found {labels}")
    return split_by_speaker(clips, seed)


# ----------------------------------------------------------------------------- decoding


def load_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any format librosa reads to mono float32 at ``sample_rate``.

    Args:
        path: the audio file.
        sample_rate: the output rate (16 kHz for the model).

    Raises:
        DataError: the file cannot be decoded.
    """
    import librosa

    try:
        audio, _ = librosa.load(str(path), sr=sample_rate, mono=True)
    except Exception as exc:  # librosa raises many types (soundfile, audioread, EOF...)
        raise DataError(f"cannot decode audio file {path}: {exc}") from exc
    return np.ascontiguousarray(audio, dtype=np.float32)


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
        from apps.voice_gender import festival

        root = festival.synthesize_all(int(spec[len(EXTRA_SPEC_PREFIX):]), seed)
        return [Clip(path, sex, speaker, EXTRA_SPLIT)
                for path, sex, speaker in festival.extra_clip_rows(root)]
    fmt, root = parse_spec(spec)
    if fmt == DEFAULT_SPEC:
        clips = fillets_clips(fetch_fillets())
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
    else:
        # Class names come from the data; reading a listing is cheap next to decoding.
        classes = sorted({c.label for c in _READERS[fmt](root)})
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
    from apps.voice_gender import festival
    from rnnkit.paths import tfds_dir

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
    from apps.voice_gender import festival

    try:
        festival.synthesize_all(per_voice, seed)  # checks Festival and every voice first
    except festival.FestivalError as exc:
        raise DataError(str(exc)) from exc
    b = extra_builder(per_voice, seed)
    b.download_and_prepare()
    return b


def split_names(b) -> list[str]:
    """The split names of a built dataset (``cs``/``nl``, or ``train``/``validation``/``test``)."""
    return sorted(b.info.splits.keys())


def class_names(b) -> list[str]:
    """The class names of a built dataset, in label-index order."""
    return list(b.info.features["label"].names)
