"""A copy of each training clip spoken at another pitch, its formants kept (``train --pitch-prob``).

Pitch alone separates most voices, so a model trained on a few dozen speakers leans on it,
and then fails the acted voices where it misleads: the game actors who play men at
190-220 Hz (``benchmarks/voice_pitch_rule.py``). What does not change with the pitch a
speaker chooses is the vocal tract, heard in the formants. A copy of a clip moved to a
random pitch, with the formants left where they were, says exactly that to the model: the
same voice, the same label, any pitch.

The copies come from Praat's "Change gender" (PSOLA resynthesis: the pitch median is set,
the formant shift ratio is 1, the contour's range and the duration are unchanged), through
the ``praat-parselmouth`` wheel. It runs in about 1 % of real time, but not in TensorFlow,
so one copy of each clip is made once per dataset split and cached under
``$RNNKIT_CACHE/voice_gender_pitch/``; training then hears, for each view of a clip, either
the clip or its copy (``pipeline.train_dataset``). Training data only: the model and the
export never see Praat.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from rnnkit.atomic import atomic_path
from rnnkit.errors import DataError
from rnnkit.paths import cache_dir

from .features import SAMPLE_RATE

#: The pitch medians the copies are moved to (Hz, log-uniform, one draw per clip): from a
#: low man's voice to a high woman's, so that a copy's pitch says nothing of its label.
PITCH_RANGE_HZ = (90.0, 280.0)
#: Praat's pitch search range for "Change gender" (its own defaults).
_PITCH_FLOOR, _PITCH_CEILING = 75.0, 600.0
#: Part of the cache key: a change to how copies are made must not reuse old ones.
VERSION = "praat-change-gender-v3"


def change_pitch(audio: np.ndarray, median_hz: float,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """The clip re-spoken with pitch median ``median_hz``, formants and duration unchanged.

    Args:
        audio: float 1-D waveform in [-1, 1].
        median_hz: the new pitch median, Hz.
        sample_rate: the rate of ``audio``.

    Returns:
        float32 waveform of the same length, or None when Praat finds no voiced frame to
        move (a breath, a click) or the result is not finite.
    """
    import parselmouth
    from parselmouth.praat import call

    if audio.ndim != 1 or audio.size == 0:
        raise DataError(f"change_pitch needs a non-empty 1-D waveform, got shape {audio.shape}")
    sound = parselmouth.Sound(np.asarray(audio, np.float64), sampling_frequency=sample_rate)
    if sound.to_pitch(None, _PITCH_FLOOR, _PITCH_CEILING).count_voiced_frames() == 0:
        return None  # Praat would hand the clip back unchanged, with a warning
    try:
        out = call(sound, "Change gender", _PITCH_FLOOR, _PITCH_CEILING, 1.0, float(median_hz),
                   1.0, 1.0)
    except parselmouth.PraatError:
        return None
    y = np.asarray(out.values[0], np.float32)
    if y.shape != audio.shape or not np.isfinite(y).all():
        return None
    return y


def _target(path: str, seed: int) -> float:
    # Seeded by the clip's path, so a clip's copy does not depend on the order clips come in.
    rng = np.random.default_rng([seed, zlib.crc32(path.encode())])
    lo, hi = np.log(PITCH_RANGE_HZ[0]), np.log(PITCH_RANGE_HZ[1])
    return float(np.exp(rng.uniform(lo, hi)))


def cache_folder(dataset_name: str, seed: int) -> Path:
    """Where the copies of one dataset config (``b.builder_config.name``) are kept."""
    return cache_dir() / "voice_gender_pitch" / f"{dataset_name}_{VERSION}_seed{seed}"


def build_split(b, split: str, seed: int) -> Path:
    """Make (once) and cache a pitch-moved copy of every clip of one split.

    Args:
        b: the built TFDS builder the split belongs to.
        split: its split name.
        seed: the copies' seed.

    Returns:
        The ``.npz`` file, one entry per clip in the split's stored order: ``audio`` (all
        copies' int16 samples, end to end), ``ends`` (each copy's end offset; a clip with
        no copy, because nothing in it is voiced or it is too short to train on, has an
        empty one) and ``path`` (the clip's, to check the pairing).
    """
    from tqdm import tqdm

    from .data import to_int16
    from .model import MIN_SECONDS
    from .pipeline import load_examples

    out = cache_folder(b.builder_config.name, seed) / f"{split}.npz"
    if out.is_file():
        return out
    min_len = int(MIN_SECONDS * SAMPLE_RATE)
    pieces, paths = [], []
    examples = load_examples(b, [split]).as_numpy_iterator()
    total = b.info.splits[split].num_examples
    for ex in tqdm(examples, total=total, desc=f"pitch copies of {split}", unit="clip"):
        path = ex["path"].decode()
        moved = None
        if len(ex["audio"]) >= min_len:  # shorter clips are not trained on
            moved = change_pitch(ex["audio"].astype(np.float32) / 32768.0, _target(path, seed))
        pieces.append(np.zeros(0, np.int16) if moved is None else to_int16(moved))
        paths.append(path)
    ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
    audio = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, audio=audio, ends=ends, path=np.array(paths, dtype=str))
    return out


def _copies(file: Path) -> tf.data.Dataset:
    def generate():
        with np.load(file) as z:  # each z[key] reads the file again: read each once
            audio, ends, paths = z["audio"], z["ends"], z["path"]
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        for i in range(len(ends)):
            yield audio[starts[i]:ends[i]], paths[i]

    return tf.data.Dataset.from_generator(generate, output_signature=(
        tf.TensorSpec([None], tf.int16), tf.TensorSpec([], tf.string)))


def paired(b, splits: list[str], seed: int) -> tf.data.Dataset:
    """The example dicts of several splits, as ``load_examples`` gives them, each with its
    pitch copy added under ``pitch_audio`` (empty when the clip has none).

    Args:
        b: the built TFDS builder.
        splits: split names.
        seed: the copies' seed.
    """
    from .pipeline import load_examples

    def join(ex, copy):
        audio, path = copy
        # The cache was made from the same stored order; a stale or reordered one must fail.
        check = tf.debugging.assert_equal(ex["path"], path,
                                          message="pitch copy cache out of step with its dataset")
        with tf.control_dependencies([check]):
            return {**ex, "pitch_audio": tf.identity(audio)}

    ds = None
    for split in splits:
        one = tf.data.Dataset.zip(load_examples(b, [split]), _copies(build_split(b, split, seed)))
        one = one.map(join)
        ds = one if ds is None else ds.concatenate(one)
    return ds
