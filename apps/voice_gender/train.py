"""Train and evaluate the voice classifier.

Default data (Fillets, one female and one male actor per language) is evaluated
speaker-disjoint both ways: ``cs_to_nl`` trains on Czech and tests on Dutch, ``nl_to_cs``
the reverse; the headline is the mean of their balanced accuracies. Validation (early
stopping) is a seeded 15 % of the *training* language's clips, never the test language.
The model that ``export`` ships (``<output>/model.keras``) trains on both languages.

User data (``--data FORMAT:PATH``) is split by speaker into train / validation / test; one
model trains on train (validation for early stopping) and is evaluated on test.

``evaluate`` also fits the floor baseline on the same folds: logistic regression on the
mean and standard deviation of 20 MFCCs (librosa), and prints it beside the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from apps.voice_gender import data as vdata
from apps.voice_gender.features import F0_REF_HZ, SAMPLE_RATE, FrontEndConfig, pitch_features
from apps.voice_gender.model import MIN_SECONDS, build_model, classify, window_samples

log = logging.getLogger(__name__)

VAL_PERCENT = 15  # share of the training language held out for early stopping
TELEPHONE_BAND = (300.0, 3400.0)
# Names of the training views, recorded in each run's recipe so that `train` retrains runs
# made with other views instead of skipping them.
AUGMENT_VERSION = "channel-v1"  # `augment` (the default)
POPULATION_AUGMENT_VERSION = "f0-population-v2-formants"  # `augment_population` (--speaker-augment)

# Speaking fundamental frequency of adults, Hz (Baken & Orlikoff, "Clinical Measurement of
# Speech and Voice", 2nd ed., 2000; the ranges Titze, "Principles of Voice Production",
# 1994, also gives): a typical man 85-180 Hz, a typical woman 165-255 Hz. With one voice per
# class in training, each clip is moved to a random F0 in its class's range, so the class is
# learnt as that range and not as one actor's pitch (see `augment`).
SPEAKING_F0_HZ = {"female": (165.0, 255.0), "male": (85.0, 180.0)}
_SEX_NAMES = {"female": "female", "f": "female", "woman": "female", "women": "female",
              "male": "male", "m": "male", "man": "male", "men": "male"}
VOICED = 0.5  # voicing strength above which a frame's pitch counts (see clip_f0)
MIN_VOICED_FRAMES = 10  # 0.2 s of voiced frames: fewer and the clip's F0 is "unknown"
PITCH_SHIFT_LIMITS = (0.5, 2.0)  # at most one octave either way (guards F0 estimate errors)
STFT_SIZE = 512  # frames of the augmentation's STFT pass (32 ms: resolves ~85 Hz harmonics)
LIFTER_SAMPLES = 24  # cepstral cut between envelope and harmonics (F0 up to ~670 Hz is excluded)
# Spectral-envelope (formant / vocal-tract length) scale of a training view relative to its
# speaker, drawn independently of the pitch for every class: female formants average ~17 %
# above male ones (Fant 1966; Peterson & Barney 1952) and spread about +-10 % within a sex,
# so +-25 % spans both sexes from any starting voice. Formant position then identifies
# neither the class nor the actor (with formants tied to F0, the formant-to-F0 ratio would
# still mark each training actor), and pitch is left to carry the class.
FORMANT_RANGE = (0.8, 1.25)


# ----------------------------------------------------------------------------- folds


def folds_for(b) -> list[dict[str, Any]]:
    """The training runs of a built dataset.

    Fillets (splits ``cs``/``nl``): the two cross-language folds plus ``final`` (both
    languages, no test). User data: one ``final`` run on ``train`` tested on ``test``.

    Args:
        b: a built TFDS builder (see ``data.prepare``).
    """
    splits = vdata.split_names(b)
    if "train" in splits:
        test = ["test"] if "test" in splits else []
        has_val = "validation" in splits
        return [{"name": "final", "train": ["train"], "val": ["validation"] if has_val else None,
                 "test": test}]
    folds = []
    if len(splits) >= 2:
        for held_out in splits:
            rest = [s for s in splits if s != held_out]
            folds.append({"name": f"{'+'.join(rest)}_to_{held_out}", "train": rest, "val": None,
                          "test": [held_out]})
    folds.append({"name": "final", "train": splits, "val": None, "test": []})
    return folds


def run_dir_of(output: Path, fold: dict) -> Path:
    """Folder of one training run: ``<output>`` for ``final``, else ``<output>/folds/<name>``."""
    return output if fold["name"] == "final" else output / "folds" / fold["name"]


# ----------------------------------------------------------------------------- tf.data


def _is_val(path: tf.Tensor) -> tf.Tensor:
    # A stable hash of the file path picks the held-out clips: same clips every run.
    return tf.strings.to_hash_bucket_fast(path, 100) < VAL_PERCENT


def load_examples(b, splits: list[str], part: str = "all") -> tf.data.Dataset:
    """The stored example dicts (audio, label, speaker, path) of several splits, optionally
    only the train or the held-out val part (seeded by a hash of the path).

    Args:
        b: the built builder.
        splits: split names to concatenate.
        part: ``all``, ``train`` (minus held-out clips) or ``val`` (held-out clips only).
    """
    ds = None
    for split in splits:
        one = b.as_dataset(split=split, shuffle_files=False)
        ds = one if ds is None else ds.concatenate(one)
    if part == "train":
        ds = ds.filter(lambda ex: tf.logical_not(_is_val(ex["path"])))
    elif part == "val":
        ds = ds.filter(lambda ex: _is_val(ex["path"]))
    return ds


def load_splits(b, splits: list[str], part: str = "all") -> tf.data.Dataset:
    """(int16 audio, label) examples of several splits, optionally the train/val part.

    Args:
        b: the built builder.
        splits: split names to concatenate.
        part: ``all``, ``train`` (minus held-out clips) or ``val`` (held-out clips only).
    """
    return load_examples(b, splits, part).map(lambda ex: (ex["audio"], ex["label"]),
                                              num_parallel_calls=tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- extra voices


def extra_voices_wanted(args: argparse.Namespace) -> bool:
    """Whether this run adds the Festival extra voices to its training data.

    ``--extra-voices`` / ``--no-extra-voices`` decide; without either, the default Fillets
    data gets them and user data (``--data FORMAT:PATH``, whose classes may not be
    female/male) does not.
    """
    wanted = getattr(args, "extra_voices", None)
    if wanted is None:
        return vdata.parse_spec(args.data)[0] == vdata.DEFAULT_SPEC
    return bool(wanted)


def extra_per_voice(args: argparse.Namespace) -> int:
    """Utterances per extra voice: a handful for ``--quick``/``--limit`` runs."""
    from apps.voice_gender import festival

    return festival.QUICK_PER_VOICE if args.limit else festival.PER_VOICE


def extra_label_map(names: list[str]) -> list[int]:
    """Index in ``names`` of each extra-voice class (``female``, ``male`` order).

    Raises:
        DataError: the dataset's classes are not one female and one male class.
    """
    sexes = [_SEX_NAMES.get(n.strip().lower()) for n in names]
    if sorted(s for s in sexes if s) != ["female", "male"] or len(names) != 2:
        raise vdata.DataError(f"--extra-voices adds female/male speakers; this dataset's classes "
                              f"are {names} (use --no-extra-voices)")
    return [sexes.index(c) for c in vdata.GENDER_CLASSES]


def extra_voices_for(args: argparse.Namespace, b):
    """The built extra-voice dataset this run trains with, or None (:func:`extra_voices_wanted`).

    Raises:
        DataError: the classes are not female/male, or Festival or a voice is missing.
    """
    if not extra_voices_wanted(args):
        return None
    extra_label_map(vdata.class_names(b))  # fail early on non female/male classes
    return vdata.prepare_extra(extra_per_voice(args), args.seed)


def fold_examples(b, fold: dict, extra=None) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The (train, val) example dicts of one training run, extra voices included.

    The extra voices are training data only: they join the training side (and, for data
    without a validation split, the early-stopping part by the same path hash as the
    training language's clips); they never enter a test split. Their labels are mapped to
    this dataset's class indices.

    Args:
        b: the built builder.
        fold: an entry of :func:`folds_for`.
        extra: the built extra-voice builder (``data.prepare_extra``) or None.
    """
    if fold["val"]:
        train_ex, val_ex = load_examples(b, fold["train"]), load_examples(b, fold["val"])
    else:
        train_ex = load_examples(b, fold["train"], "train")
        val_ex = load_examples(b, fold["train"], "val")
    if extra is not None:
        mapping = tf.constant(extra_label_map(vdata.class_names(b)), tf.int64)

        def relabel(ex):
            return {**ex, "label": tf.gather(mapping, tf.cast(ex["label"], tf.int64))}

        if fold["val"]:
            train_ex = train_ex.concatenate(load_examples(extra, [vdata.EXTRA_SPLIT]).map(relabel))
        else:
            train_ex = train_ex.concatenate(
                load_examples(extra, [vdata.EXTRA_SPLIT], "train").map(relabel))
            val_ex = val_ex.concatenate(
                load_examples(extra, [vdata.EXTRA_SPLIT], "val").map(relabel))
    return train_ex, val_ex


def drop_too_short(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Training only: drop clips under the minimum length (a few Fillets files are empty)."""
    min_len = int(MIN_SECONDS * SAMPLE_RATE)
    return ds.filter(lambda audio, label: tf.shape(audio)[0] >= min_len)


def band_limit(x: tf.Tensor, low: tf.Tensor, high: tf.Tensor, sample_rate: int = SAMPLE_RATE) -> tf.Tensor:
    """Zero every frequency outside [low, high] Hz of a 1-D signal (FFT brick-wall filter)."""
    n = tf.shape(x)[0]
    spec = tf.signal.rfft(x, fft_length=[n])
    freqs = tf.cast(tf.range(n // 2 + 1), tf.float32) * (sample_rate / tf.cast(tf.maximum(n, 1), tf.float32))
    keep = tf.logical_and(freqs >= low, freqs <= high)
    return tf.signal.irfft(spec * tf.cast(keep, spec.dtype), fft_length=[n])


def eq_gain_db(freqs: tf.Tensor, seed: tf.Tensor, max_db: float = 12.0) -> tf.Tensor:
    """The gain curve (dB) of a random smooth equaliser at ``freqs`` Hz: gains of
    +-``max_db`` at 8 log-spaced frequencies (50 Hz..8 kHz), interpolated on a log-frequency
    axis (flat beyond the end knots).

    Args:
        freqs: frequencies in Hz, any shape.
        seed: a (2,) int seed.
        max_db: the largest boost or cut.
    """
    knots_db = tf.random.stateless_uniform([8], seed, -max_db, max_db)
    knots_log = tf.linspace(tf.math.log(50.0), tf.math.log(8000.0), 8)
    logf = tf.math.log(tf.clip_by_value(freqs, 50.0, 8000.0))
    pos = (logf - knots_log[0]) / (knots_log[1] - knots_log[0])
    i0 = tf.clip_by_value(tf.cast(tf.floor(pos), tf.int32), 0, 6)
    frac = tf.clip_by_value(pos - tf.cast(i0, tf.float32), 0.0, 1.0)
    return tf.gather(knots_db, i0) * (1.0 - frac) + tf.gather(knots_db, i0 + 1) * frac


def random_eq(x: tf.Tensor, seed: tf.Tensor, max_db: float = 12.0, sample_rate: int = SAMPLE_RATE) -> tf.Tensor:
    """A random smooth equaliser (:func:`eq_gain_db`) applied in the FFT domain.

    Microphones, rooms and codecs colour the spectrum; with only a few training voices,
    each recorded with one chain, the model would otherwise learn the chain as the class.
    """
    n = tf.shape(x)[0]
    freqs = tf.cast(tf.range(n // 2 + 1), tf.float32) * (sample_rate / tf.cast(tf.maximum(n, 1), tf.float32))
    gain_db = eq_gain_db(freqs, seed, max_db)
    spec = tf.signal.rfft(x, fft_length=[n])
    gain = tf.pow(10.0, gain_db / 20.0)
    return tf.signal.irfft(spec * tf.complex(gain, tf.zeros_like(gain)), fft_length=[n])


def f0_ranges_for(names: list[str]) -> np.ndarray | None:
    """Per-class target F0 ranges ``(K, 2)`` in Hz when every class is a sex, else ``None``.

    ``female``/``f``/``woman`` and ``male``/``m``/``man`` (any case) map to
    :data:`SPEAKING_F0_HZ`; any other class set (bird calls, ...) gets no pitch targeting.

    Args:
        names: the class names in label order.
    """
    sexes = [_SEX_NAMES.get(n.strip().lower()) for n in names]
    if not names or any(s is None for s in sexes) or len(set(sexes)) != len(sexes):
        return None
    return np.array([SPEAKING_F0_HZ[s] for s in sexes], np.float32)


def clip_f0(audio: tf.Tensor, cfg: FrontEndConfig | None = None) -> tf.Tensor:
    """Median F0 in Hz of a clip's voiced frames (0 when it has too few of them).

    The same autocorrelation estimator as the model's pitch features
    (``features.pitch_features``): a frame counts as voiced when its voicing strength is at
    least :data:`VOICED` (Boersma's default voicing threshold is 0.45), and the clip needs
    :data:`MIN_VOICED_FRAMES` of them. The median ignores the odd octave error.

    Args:
        audio: float32 1-D waveform at 16 kHz.
        cfg: front-end settings (default ``FrontEndConfig()``).
    """
    cfg = cfg or FrontEndConfig()
    feats = pitch_features(tf.convert_to_tensor(audio, tf.float32)[None], cfg)[0]
    voicing = feats[:, 1]
    voiced = voicing >= VOICED
    log_f0 = tf.sort(tf.boolean_mask(feats[:, 0] / tf.maximum(voicing, 1e-6), voiced))
    n = tf.size(log_f0)
    median = tf.cond(n > 0, lambda: log_f0[n // 2], lambda: tf.constant(0.0))
    return tf.where(n >= MIN_VOICED_FRAMES, F0_REF_HZ * tf.pow(2.0, median), 0.0)


def pitch_shift(x: tf.Tensor, factor: tf.Tensor, bin_gain: tf.Tensor | None = None,
                n_fft: int = 512, hop: int = 128, formant: tf.Tensor | None = None) -> tf.Tensor:
    """Scale every frequency of a signal by ``factor`` without changing its duration
    (optionally with the spectral envelope scaled by a separate ``formant`` factor).

    A phase vocoder (Flanagan & Golden 1966; Laroche & Dolson 1999 describe the frequency
    domain pitch shifter): STFT (512-sample Hann frames every 128 samples), each output bin
    ``j`` takes the magnitude and instantaneous frequency of source position ``j / factor``
    (linear interpolation), the instantaneous frequencies are multiplied by ``factor`` and
    integrated over time into phases, and the inverse STFT overlap-adds the frames. F0, its
    harmonics and the formants all move by ``factor`` (a vocal-tract-length change goes
    with the pitch change, as between real speakers), while the speaking rate stays: unlike
    resampling, this does not tie a slower tempo to a lower voice.

    Args:
        x: float32 1-D waveform.
        factor: scalar > 0; 1.5 moves a 140 Hz voice to 210 Hz.
        bin_gain: optional (n_fft // 2 + 1,) linear gain per output bin (bin ``k`` is
            ``k * 16000 / n_fft`` Hz): a channel filter applied in the same pass, far cheaper
            than a second FFT over the whole clip.
        n_fft: STFT frame and FFT size.
        hop: STFT hop (a quarter frame: the Hann overlap-add is then exact).
        formant: optional scale of the spectral envelope (formants, vocal-tract length),
            independent of ``factor``. Each frame's log magnitude is split by cepstral
            liftering (quefrencies below :data:`LIFTER_SAMPLES`, i.e. detail coarser than
            ~670 Hz: the envelope) into envelope + harmonic fine structure; the fine
            structure moves by ``factor``, the envelope by ``formant``. ``None``: both move
            by ``factor``.
    """
    n = tf.shape(x)[0]
    factor = tf.cast(factor, tf.float32)
    # Pad a frame each side so the first and last samples have full overlap-add support.
    padded = tf.pad(x, [[n_fft, n_fft]])
    spec = tf.signal.stft(padded[None], n_fft, hop, n_fft, window_fn=tf.signal.hann_window,
                          pad_end=True)[0]  # (T, K)
    bins = n_fft // 2 + 1
    mag = tf.abs(spec)
    phase = tf.math.angle(spec)
    expected = 2.0 * math.pi * hop / n_fft * tf.range(bins, dtype=tf.float32)  # per hop
    dev = phase[1:] - phase[:-1] - expected
    dev = dev - 2.0 * math.pi * tf.round(dev / (2.0 * math.pi))
    inst = tf.concat([expected[None], expected + dev], axis=0)  # radians per hop
    src = tf.range(bins, dtype=tf.float32) / factor
    inside = tf.cast(src <= bins - 1, tf.float32)
    i0 = tf.minimum(tf.cast(tf.floor(src), tf.int32), bins - 1)
    i1 = tf.minimum(i0 + 1, bins - 1)
    frac = src - tf.cast(i0, tf.float32)

    def warp(v: tf.Tensor) -> tf.Tensor:
        return (tf.gather(v, i0, axis=1) * (1.0 - frac) + tf.gather(v, i1, axis=1) * frac) * inside

    if formant is None:
        new_mag = warp(mag)
    else:
        log_mag = tf.math.log(mag + 1e-6)
        ceps = tf.signal.irfft(tf.complex(log_mag, tf.zeros_like(log_mag)), fft_length=[n_fft])
        q = tf.range(n_fft)
        keep = tf.cast(tf.logical_or(q < LIFTER_SAMPLES, q > n_fft - LIFTER_SAMPLES), tf.float32)
        envelope = tf.math.real(tf.signal.rfft(ceps * keep, fft_length=[n_fft]))
        f_src = tf.range(bins, dtype=tf.float32) / tf.cast(formant, tf.float32)
        f_inside = tf.cast(f_src <= bins - 1, tf.float32)
        f0_ = tf.minimum(tf.cast(tf.floor(f_src), tf.int32), bins - 1)
        f1_ = tf.minimum(f0_ + 1, bins - 1)
        f_frac = f_src - tf.cast(f0_, tf.float32)
        new_env = tf.gather(envelope, f0_, axis=1) * (1.0 - f_frac) + tf.gather(envelope, f1_, axis=1) * f_frac
        # Beyond the source's top bin there is no envelope: use a floor far below speech.
        new_env = new_env * f_inside + (1.0 - f_inside) * tf.math.log(1e-6)
        new_mag = tf.exp(warp(log_mag - envelope) + new_env) * inside
    if bin_gain is not None:
        new_mag = new_mag * bin_gain[None]
    # Start from the source's own first-frame phases (nearest bin), then integrate: with
    # factor 1 this gives back the original signal exactly.
    advance = warp(inst) * factor
    first = tf.gather(phase[0], tf.minimum(tf.cast(tf.round(src), tf.int32), bins - 1))
    new_phase = first[None] + tf.cumsum(advance, axis=0) - advance[:1]
    new_spec = tf.complex(new_mag * tf.cos(new_phase), new_mag * tf.sin(new_phase))
    y = tf.signal.inverse_stft(new_spec, n_fft, hop, n_fft,
                               window_fn=tf.signal.inverse_stft_window_fn(hop))
    return y[n_fft : n_fft + n]


def _random_crop_resampled(audio: tf.Tensor, u, max_len: int) -> tuple[tf.Tensor, tf.Tensor]:
    """A random crop of ``audio`` (0.5 s up to ``max_len``) resampled by a random rate.

    ``u(i, lo, hi)`` draws the i-th seeded uniform (indices 0-3 are used). Returns the
    view and the rate (source samples read per output sample: speed and pitch x rate).
    """
    length = tf.shape(audio)[0]
    rate = u(0, 0.92, 1.08)
    out_len = tf.cast(max_len, tf.float32)
    short = u(1, 0.0, 1.0) < 0.25
    out_len = tf.where(short, u(2, 0.5 * SAMPLE_RATE, float(max_len)), out_len)
    src_len = tf.minimum(length, tf.cast(tf.math.ceil(out_len * rate), tf.int32) + 1)
    start = tf.cast(u(3, 0.0, 1.0) * tf.cast(length - src_len + 1, tf.float32), tf.int32)
    start = tf.clip_by_value(start, 0, tf.maximum(length - src_len, 0))
    seg = audio[start : start + src_len]
    n_out = tf.maximum(1, tf.minimum(tf.cast(out_len, tf.int32),
                                     tf.cast(tf.cast(src_len - 1, tf.float32) / rate, tf.int32) + 1))
    pos = tf.cast(tf.range(n_out), tf.float32) * rate
    i0 = tf.minimum(tf.cast(tf.floor(pos), tf.int32), src_len - 1)
    i1 = tf.minimum(i0 + 1, src_len - 1)
    frac = pos - tf.cast(i0, tf.float32)
    x = tf.gather(seg, i0) * (1.0 - frac) + tf.gather(seg, i1) * frac
    return x, rate


def _noisy_gained(x: tf.Tensor, u, noise_seed: tf.Tensor) -> tf.Tensor:
    """White noise at 5-40 dB SNR of the clip's own level (50 %), then a gain of -30..+6 dB
    with clipping; ``u(i, lo, hi)`` draws the i-th seeded uniform (indices 6, 8, 9)."""
    rms = tf.sqrt(tf.reduce_mean(tf.square(x)) + 1e-12)
    snr_db = u(6, 5.0, 40.0)
    noise = tf.random.stateless_normal(tf.shape(x), noise_seed) * rms * tf.pow(10.0, -snr_db / 20.0)
    x = tf.where(u(8, 0.0, 1.0) < 0.5, x + noise, x)
    gain = tf.pow(10.0, u(9, -30.0, 6.0) / 20.0)
    return tf.clip_by_value(x * gain, -1.0, 1.0)


def augment_population(audio: tf.Tensor, seed: tf.Tensor, max_len: int,
                       f0: tf.Tensor | float = 0.0, f0_range: tf.Tensor | None = None) -> tf.Tensor:
    """One random training view with speaker-population augmentation (``--speaker-augment``).

    Tried and measured worse than :func:`augment` on the Fillets folds (see
    docs/voice_gender.md, Results), so it is opt-in.

    Speaker population (when the class has an F0 range and the clip a measured F0): the
    clip's pitch (and with it its formants) is moved to a random F0, log-uniform over the
    class's adult speaking range (:data:`SPEAKING_F0_HZ`), with the tempo kept
    (:func:`pitch_shift`). Deployment conditions the four Fillets voices do not cover:
    speed +-8 % (resampling), random crop length (0.5 s up to the window), telephone band
    300-3400 Hz or a random low-pass, a random smooth EQ of +-12 dB (recording chain), white
    noise at 5-40 dB SNR, gain -30..+6 dB with clipping.

    Args:
        audio: the whole clip, float32 in [-1, 1].
        seed: a (2,) int seed for the stateless random ops.
        max_len: the training window in samples.
        f0: the clip's median F0 in Hz (:func:`clip_f0`); 0 = unknown, no pitch targeting.
        f0_range: (2,) target F0 range in Hz for the clip's class; ``None`` = no targeting.
    """
    seeds = tf.random.experimental.stateless_split(seed, 14)
    u = lambda i, lo, hi: tf.random.stateless_uniform([], seeds[i], lo, hi)
    x, rate = _random_crop_resampled(audio, u, max_len)
    # Speaker: the resampling above already scaled the pitch by `rate`; shift the rest of
    # the way to a random F0 of the class's population (no shift when the class has no
    # range or the clip no measured F0).
    shift = tf.constant(1.0)
    if f0_range is not None:
        f0 = tf.cast(f0, tf.float32)
        f0_range = tf.cast(f0_range, tf.float32)
        target = tf.exp(u(12, 0.0, 1.0) * (tf.math.log(f0_range[1]) - tf.math.log(f0_range[0]))
                        + tf.math.log(f0_range[0]))
        shift = tf.where(f0 > 0.0, tf.clip_by_value(target / tf.maximum(f0 * rate, 1.0),
                                                    *PITCH_SHIFT_LIMITS), 1.0)
    # Channel, as a gain per STFT bin applied in the same pass as the pitch shift:
    # telephone band (25 %), random low-pass (15 %) or full band; a random smooth EQ (80 %).
    freqs = tf.linspace(0.0, SAMPLE_RATE / 2.0, STFT_SIZE // 2 + 1)
    pick = u(4, 0.0, 1.0)
    low = tf.where(pick < 0.25, TELEPHONE_BAND[0], 0.0)
    high = tf.where(pick < 0.25, TELEPHONE_BAND[1],
                    tf.where(pick < 0.40, u(5, 2500.0, 7000.0), SAMPLE_RATE / 2.0))
    band = tf.cast(tf.logical_and(freqs >= low, freqs <= high), tf.float32)
    eq_db = tf.where(u(10, 0.0, 1.0) < 0.8, eq_gain_db(freqs, seeds[11]), 0.0)
    formant = None
    if f0_range is not None:
        # Net envelope scale vs the speaker: the resampling already applied `rate`.
        formant = tf.exp(u(13, math.log(FORMANT_RANGE[0]), math.log(FORMANT_RANGE[1]))) / rate
    x = pitch_shift(x, shift, band * tf.pow(10.0, eq_db / 20.0), n_fft=STFT_SIZE,
                    formant=formant)
    return _noisy_gained(x, u, seeds[7])


def augment(audio: tf.Tensor, seed: tf.Tensor, max_len: int) -> tf.Tensor:
    """One random training view of a clip (float32 1-D), at most ``max_len`` samples.

    Deployment conditions the four Fillets voices do not cover: speed/pitch +-8 %
    (resampling), random crop length (0.5 s up to the window), telephone band 300-3400 Hz
    or a random low-pass, a random smooth EQ of +-12 dB (recording chain), white noise at
    5-40 dB SNR, gain -30..+6 dB with clipping.

    Args:
        audio: the whole clip, float32 in [-1, 1].
        seed: a (2,) int seed for the stateless random ops.
        max_len: the training window in samples.
    """
    seeds = tf.random.experimental.stateless_split(seed, 12)
    u = lambda i, lo, hi: tf.random.stateless_uniform([], seeds[i], lo, hi)
    x, _ = _random_crop_resampled(audio, u, max_len)
    # Channel: telephone band (25 %), random low-pass (15 %), untouched otherwise.
    pick = u(4, 0.0, 1.0)
    x = tf.cond(pick < 0.25, lambda: band_limit(x, *TELEPHONE_BAND),
                lambda: tf.cond(pick < 0.40, lambda: band_limit(x, 0.0, u(5, 2500.0, 7000.0)),
                                lambda: x))
    # Recording chain: a random smooth EQ (80 %).
    x = tf.cond(u(10, 0.0, 1.0) < 0.8, lambda: random_eq(x, seeds[11]), lambda: x)
    return _noisy_gained(x, u, seeds[7])


def _to_float(audio: tf.Tensor) -> tf.Tensor:
    return tf.cast(audio, tf.float32) / 32768.0


def train_dataset(ds: tf.data.Dataset, batch_size: int, seed: int, num_classes: int,
                  class_weight: np.ndarray, f0_ranges: np.ndarray | None = None) -> tf.data.Dataset:
    """Shuffled, augmented, padded batches ``({"waveform", "length"}, label, weight)``.

    Args:
        ds: (int16 audio, label) examples.
        batch_size: clips per batch.
        seed: shuffle/augmentation seed.
        num_classes: number of classes (unused except for shape checks).
        class_weight: per-class loss weight (balanced classes).
        f0_ranges: optional ``(K, 2)`` target F0 range per class (:func:`f0_ranges_for`):
            speaker-population views (:func:`augment_population`): each clip's F0 is
            measured once (:func:`clip_f0`, cached with the audio) and every view moves it
            into its class's range. ``None`` (default): the channel views of :func:`augment`.
    """
    del num_classes
    win, _ = window_samples()
    weights = tf.constant(class_weight, tf.float32)
    ranges = None if f0_ranges is None else tf.constant(f0_ranges, tf.float32)
    counter = tf.data.Dataset.counter()

    def view(index, example):
        audio, label, f0 = example
        x = augment_population(_to_float(audio), tf.stack([tf.cast(seed, tf.int64), index]), win,
                               f0, tf.gather(ranges, label))
        return ({"waveform": x, "length": tf.shape(x)[0]}, label, tf.gather(weights, label))

    def plain_view(index, example):
        audio, label = example
        x = augment(_to_float(audio), tf.stack([tf.cast(seed, tf.int64), index]), win)
        return ({"waveform": x, "length": tf.shape(x)[0]}, label, tf.gather(weights, label))

    if ranges is None:
        view = plain_view
    else:
        ds = ds.map(lambda audio, label: (audio, label, clip_f0(_to_float(audio))),
                    num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.cache().shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip((counter, ds)).map(view, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.padded_batch(batch_size, padded_shapes=({"waveform": [None], "length": []}, [], [])) \
        .prefetch(tf.data.AUTOTUNE)


def eval_dataset(ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Validation batches: the first window of each clip, no augmentation."""
    win, _ = window_samples()

    def view(audio, label):
        x = _to_float(audio)[:win]
        return {"waveform": x, "length": tf.shape(x)[0]}, label

    return ds.map(view).cache().padded_batch(
        batch_size, padded_shapes=({"waveform": [None], "length": []}, [])).prefetch(2)


# ----------------------------------------------------------------------------- training


def train_fold(b, fold: dict, args: argparse.Namespace, extra=None) -> dict[str, Any]:
    """Train one run and save ``<run>/model.keras`` (skipped when already complete).

    Args:
        b: the built builder.
        fold: an entry of :func:`folds_for`.
        args: parsed CLI flags (``epochs``, ``batch_size``, ``seed``, ``strategy``, ...).
        extra: the extra-voice builder (training data only), or None.
    """
    import keras

    from rnnkit.training import fit, get_strategy, save_model, seed_everything

    out = run_dir_of(Path(args.output), fold)
    done = out / "model.keras"
    speaker_augment = bool(getattr(args, "speaker_augment", False))
    recipe = {"data": args.data, "limit": args.limit, "seed": args.seed, "epochs": args.epochs,
              "batch_size": args.batch_size,
              "augment": POPULATION_AUGMENT_VERSION if speaker_augment else AUGMENT_VERSION}
    if extra is not None:
        # Only recorded when used, so runs without extra voices keep their old recipe.
        recipe["extra_voices"] = extra.builder_config.name
    if done.exists() and (out / "train_done.json").exists():
        info = json.loads((out / "train_done.json").read_text())
        if info.get("recipe") == recipe:
            log.info("%s already trained (%s); skipping", fold["name"], done)
            return info
        log.info("%s was trained with %s; retraining with %s", fold["name"], info.get("recipe"),
                 recipe)
    seed_everything(args.seed)
    names = vdata.class_names(b)
    train_ex, val_ex = fold_examples(b, fold, extra)
    pair = lambda ex: (ex["audio"], ex["label"])
    train_raw = drop_too_short(train_ex.map(pair, num_parallel_calls=tf.data.AUTOTUNE))
    val_raw = drop_too_short(val_ex.map(pair, num_parallel_calls=tf.data.AUTOTUNE))
    labels = np.array([int(y) for _, y in train_raw.map(lambda a, y: (0, y)).as_numpy_iterator()])
    counts = np.bincount(labels, minlength=len(names)).astype(float)
    if (counts == 0).any():
        missing = [n for n, c in zip(names, counts) if c == 0]
        raise vdata.DataError(f"training split has no clips of class(es) {missing}")
    class_weight = counts.sum() / (len(names) * counts)
    f0_ranges = f0_ranges_for(names) if speaker_augment else None
    train_ds = train_dataset(train_raw, args.batch_size, args.seed, len(names), class_weight,
                             f0_ranges)
    val_ds = eval_dataset(val_raw, args.batch_size)
    strategy = get_strategy(args.strategy)
    with strategy.scope():
        model = build_model(len(names), seed=args.seed)
        steps = max(1, math.ceil(len(labels) / args.batch_size)) * args.epochs
        lr = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps, alpha=0.05)
        model.compile(optimizer=keras.optimizers.Adam(lr, clipnorm=1.0),
                      loss="sparse_categorical_crossentropy",
                      weighted_metrics=[], metrics=["accuracy"])
    print(f"[voice_gender] training {fold['name']}: {len(labels)} clips "
          f"({', '.join(f'{n} {int(c)}' for n, c in zip(names, counts))}), "
          f"train on {'+'.join(fold['train'])}"
          f"{' + Festival extra voices ' + extra.builder_config.name if extra is not None else ''}"
          f"; pitch targeting "
          f"{'off' if f0_ranges is None else dict(zip(names, f0_ranges.tolist()))}", flush=True)
    start = time.time()
    result = fit(model, train_ds, val_ds, output_dir=out, epochs=args.epochs,
                 monitor="val_loss", patience=args.patience)
    save_model(model, done)
    info = {"recipe": recipe, "fold": fold, "seconds": round(time.time() - start, 1), "train_clips": len(labels),
            "params": int(model.count_params()), "best_epoch": result["best_epoch"],
            "epochs_run": result["epochs_run"], "class_names": names}
    from rnnkit.atomic import atomic_write_json

    atomic_write_json(out / "train_done.json", info)
    return info


def train(args: argparse.Namespace) -> int:
    """``train`` verb: every fold of the data, then the final model (resumable)."""
    b = vdata.prepare(args.data, args.limit, args.seed)
    extra = extra_voices_for(args, b)
    start = time.time()
    for fold in folds_for(b):
        info = train_fold(b, fold, args, extra)
        print(f"[voice_gender] {fold['name']}: done ({info['seconds']} s, "
              f"best epoch {info['best_epoch'] + 1}/{info['epochs_run']})", flush=True)
    print(f"[voice_gender] training finished in {time.time() - start:.0f} s; "
          f"final model {Path(args.output) / 'model.keras'}", flush=True)
    return 0


# ----------------------------------------------------------------------------- evaluation


def load_model(path: Path):
    """Load a trained ``model.keras`` (custom layers registered on import)."""
    import keras

    import apps.voice_gender.model  # noqa: F401  (registers the custom layers)

    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `rnnkit voice_gender train` first")
    return keras.models.load_model(path, compile=False)


def predict_arrays(model, clips: list[np.ndarray], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Windowed probabilities and status of float32 clips (sorted by length for speed).

    Args:
        model: a trained model.
        clips: 1-D float32 arrays at 16 kHz.
        batch_size: clips per batch.
    """
    fn = tf.function(lambda w, n: classify(model, w, n), reduce_retracing=True)
    order = np.argsort([len(c) for c in clips])
    probs = np.zeros((len(clips), model.output_shape[-1]), np.float32)
    status = np.empty(len(clips), object)
    for i in range(0, len(clips), batch_size):
        idx = order[i : i + batch_size]
        width = max(1, max(len(clips[j]) for j in idx))
        wave = np.zeros((len(idx), width), np.float32)
        for r, j in enumerate(idx):
            wave[r, : len(clips[j])] = clips[j]
        out = fn(tf.constant(wave), tf.constant([len(clips[j]) for j in idx], tf.int32))
        probs[idx] = out["probabilities"].numpy()
        status[idx] = [s.decode() for s in out["status"].numpy()]
    return probs, status


def telephone(clip: np.ndarray) -> np.ndarray:
    """The clip as a telephone line passes it: 300-3400 Hz band (deterministic)."""
    return band_limit(tf.constant(clip), *TELEPHONE_BAND).numpy()


def mfcc_stats(clip: np.ndarray) -> np.ndarray:
    """Baseline features: mean and standard deviation of 20 MFCCs (librosa)."""
    import librosa

    mfcc = librosa.feature.mfcc(y=clip, sr=SAMPLE_RATE, n_mfcc=20)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)])


def classification_metrics(y: np.ndarray, probs: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Balanced accuracy, accuracy, per-class recall, confusion matrix (and ROC AUC for 2)."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score

    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y, pred, labels=list(range(len(names))))
    recall = {n: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None for i, n in enumerate(names)}
    out = {"balanced_accuracy": float(balanced_accuracy_score(y, pred)),
           "accuracy": float((pred == y).mean()), "recall": recall,
           "confusion_matrix": cm.tolist(), "n": len(y)}
    if len(names) == 2 and len(set(y.tolist())) == 2:
        out["roc_auc"] = float(roc_auc_score(y, probs[:, 1]))
    return out


def _numpy_split(b, splits: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    clips, labels = [], []
    for audio, label in load_splits(b, splits).as_numpy_iterator():
        clips.append(audio.astype(np.float32) / 32768.0)
        labels.append(int(label))
    return clips, np.array(labels)


def _plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from rnnkit.atomic import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for name, (y, score) in curves.items():
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def evaluate(args: argparse.Namespace) -> int:
    """``evaluate`` verb: every fold with a test split; metrics.json + PNGs in <output>/reports."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from tqdm import tqdm

    from rnnkit.paths import reports_dir
    from rnnkit.reports import format_headline, plot_confusion_matrix, plot_history, write_metrics

    b = vdata.prepare(args.data, args.limit, args.seed)
    names = vdata.class_names(b)
    output = Path(args.output)
    reports = reports_dir(output)
    folds = [f for f in folds_for(b) if f["test"]]
    if not folds:
        raise vdata.DataError("this dataset has no test split to evaluate on")
    cache: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
    mfcc_cache: dict[str, np.ndarray] = {}

    def split_data(split: str):
        if split not in cache:
            cache[split] = _numpy_split(b, [split])
            mfcc_cache[split] = np.stack([mfcc_stats(c) for c in tqdm(
                cache[split][0], desc=f"MFCC baseline features {split}", unit="clip")])
        return cache[split]

    start = time.time()
    metrics: dict[str, Any] = {"data": args.data, "class_names": names, "folds": {}}
    rows: dict[str, Any] = {}
    for fold in folds:
        run = run_dir_of(output, fold)
        model = load_model(run / "model.keras")
        test_split = fold["test"][0]
        clips, y = split_data(test_split)
        probs, status = predict_arrays(model, clips)
        result = classification_metrics(y, probs, names)
        result["flagged"] = {s: int((status == s).sum()) for s in ("silent", "too_short")}
        tel_probs, _ = predict_arrays(model, [telephone(c) for c in clips])
        result["telephone_band"] = classification_metrics(y, tel_probs, names)
        # Floor baseline on exactly the same training clips (all of the training splits).
        train_x, train_y = [], []
        for split in fold["train"]:
            _, ys = split_data(split)
            train_x.append(mfcc_cache[split])
            train_y.append(ys)
        baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        baseline.fit(np.concatenate(train_x), np.concatenate(train_y))
        base_probs = baseline.predict_proba(mfcc_cache[test_split])
        result["baseline_mfcc_logreg"] = classification_metrics(y, base_probs, names)
        metrics["folds"][fold["name"]] = result
        title = f"{fold['name']}: train {'+'.join(fold['train'])}, test {test_split}"
        plot_confusion_matrix(np.array(result["confusion_matrix"]), names,
                              reports / f"confusion_{fold['name']}.png", title=title)
        if (run / "history.json").exists():
            plot_history(json.loads((run / "history.json").read_text()),
                         reports / f"history_{fold['name']}.png", title=f"training {fold['name']}")
        if len(names) == 2:
            _plot_roc({"model": (y, probs[:, 1]), "model, telephone band": (y, tel_probs[:, 1]),
                       "MFCC logreg baseline": (y, base_probs[:, 1])},
                      reports / f"roc_{fold['name']}.png", f"ROC {fold['name']} ({names[1]})")
        rows[f"{fold['name']} balanced acc"] = result["balanced_accuracy"]
        rows[f"{fold['name']} baseline"] = result["baseline_mfcc_logreg"]["balanced_accuracy"]
        rows[f"{fold['name']} telephone band"] = result["telephone_band"]["balanced_accuracy"]
    bal = [m["balanced_accuracy"] for m in metrics["folds"].values()]
    base = [m["baseline_mfcc_logreg"]["balanced_accuracy"] for m in metrics["folds"].values()]
    metrics["headline"] = {"mean_balanced_accuracy": float(np.mean(bal)),
                           "baseline_mean_balanced_accuracy": float(np.mean(base)),
                           "folds": len(bal)}
    final = output / "model.keras"
    if final.exists():
        metrics["model"] = {"params": int(load_model(final).count_params()),
                            "keras_file_bytes": final.stat().st_size}
    metrics["evaluate_seconds"] = round(time.time() - start, 1)
    if args.limit:
        metrics["note"] = f"--limit {args.limit}: a subset, not the reported figure"
    write_metrics(reports, metrics)
    rows["mean balanced acc"] = metrics["headline"]["mean_balanced_accuracy"]
    rows["mean baseline"] = metrics["headline"]["baseline_mean_balanced_accuracy"]
    print(format_headline(f"voice_gender evaluation ({args.data}, speaker-disjoint)", rows))
    print(f"reports: {reports}")
    return 0
