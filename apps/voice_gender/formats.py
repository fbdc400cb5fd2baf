"""User datasets (``--data FORMAT:PATH``): the readers of each layout, split by speaker.

Every format yields :class:`Clip` records that :func:`split_by_speaker` assigns to
``train``/``validation``/``test`` so that no speaker is in two splits:

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
"""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnkit.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aiff", ".aif", ".au", ".sph")
USER_FORMATS = ("folder", "csv", "commonvoice", "voxceleb1", "librispeech", "vctk", "timit")
DEFAULT_SPEC = "fillets"
#: Every documented real speaker (:mod:`.sources`), split into speaker-disjoint folds.
REAL_SPEC = "real"


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
    if spec == REAL_SPEC:
        return REAL_SPEC, None
    fmt, sep, path = spec.partition(":")
    if not sep or fmt not in _READERS:
        raise DataError(f"--data {spec!r}: expected 'fillets', 'real' or FORMAT:PATH with FORMAT one "
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



def user_class_names(fmt: str, root: Path) -> list[str]:
    """The sorted class names of a user dataset (its listing only, nothing is decoded).

    Args:
        fmt: one of :data:`USER_FORMATS`.
        root: the file or folder given after ``FORMAT:``.
    """
    return sorted({c.label for c in _READERS[fmt](root)})
