"""What each training run reads: the folds of a dataset, the extra voices, the tf.data input.

Real speakers (the app's default, splits ``fold0``..``fold4``) give one run per fold
(trained on the other four splits, tested on its own) plus ``final`` on all five. Fillets
(splits ``cs``/``nl``) gives two cross-language folds, ``cs_to_nl``
(train on Czech, test on Dutch) and ``nl_to_cs``, plus ``final`` (both languages, no test:
the model ``export`` ships). Validation (early stopping) is a seeded 15 % of the *training*
side's clips, picked by a hash of the file path, never the test language. User data
(``--data FORMAT:PATH``, split by speaker) gives one ``final`` run on ``train``, stopped
on ``validation`` and tested on ``test``.

The Festival extra voices (``data.prepare_extra``) join the training side of every run,
relabelled to the dataset's class indices; they never enter a test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from rnnkit.errors import DataError

from . import data
from .augment import augment
from .features import SAMPLE_RATE
from .model import MIN_SECONDS, window_samples

VAL_PERCENT = 15  # share of the training side held out for early stopping
FINAL = "final"  # the run on all the training data: the exported model
# Class-name spellings that name a sex (the extra voices are female/male speakers).
_SEX_NAMES = {"female": "female", "f": "female", "woman": "female", "women": "female",
              "male": "male", "m": "male", "man": "male", "men": "male"}


# ----------------------------------------------------------------------------- folds


def folds_for(b) -> list[dict[str, Any]]:
    """The training runs of a built dataset.

    Real speakers (splits ``fold<i>``): one run per fold, tested on it and trained on the
    others, plus ``final`` on all of them. Fillets (splits ``cs``/``nl``): the two
    cross-language folds plus ``final`` (both languages, no test). User data: one ``final`` run on ``train`` tested on ``test``.

    Args:
        b: a built TFDS builder (see ``data.prepare``).

    Returns:
        One dict per run: ``name``, ``train`` (split names), ``val`` (split names, or None
        for a hash-picked share of the training splits) and ``test`` (split names).
    """
    splits = data.split_names(b)
    if splits and all(sp.startswith(data.REAL_SPLIT_PREFIX) for sp in splits):
        # Real speakers: grouped k-fold, each fold tests its speakers and trains on the rest.
        folds = [{"name": held_out, "train": [sp for sp in splits if sp != held_out],
                  "val": None, "test": [held_out]} for held_out in splits]
        folds.append({"name": FINAL, "train": splits, "val": None, "test": []})
        return folds
    if "train" in splits:
        test = ["test"] if "test" in splits else []
        has_val = "validation" in splits
        return [{"name": FINAL, "train": ["train"], "val": ["validation"] if has_val else None,
                 "test": test}]
    folds = []
    if len(splits) >= 2:
        for held_out in splits:
            rest = [s for s in splits if s != held_out]
            folds.append({"name": f"{'+'.join(rest)}_to_{held_out}", "train": rest, "val": None,
                          "test": [held_out]})
    folds.append({"name": FINAL, "train": splits, "val": None, "test": []})
    return folds


def fold_model_name(fold: dict[str, Any]) -> str:
    """The fold's model file inside the run folder: ``model.keras`` for ``final`` (the one
    ``export`` ships), ``folds/<name>/model.keras`` for a cross-validation fold."""
    return "model.keras" if fold["name"] == FINAL else f"folds/{fold['name']}/model.keras"


def fold_subdir(fold: dict[str, Any]) -> str | None:
    """The fold's training folder inside the run folder (None: the run folder itself)."""
    return None if fold["name"] == FINAL else f"folds/{fold['name']}"


# ----------------------------------------------------------------------------- examples


def _is_val(path: tf.Tensor) -> tf.Tensor:
    # A stable hash of the file path picks the held-out clips: same clips every run.
    return tf.strings.to_hash_bucket_fast(path, 100) < VAL_PERCENT


def _only_train_part(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.filter(lambda ex: tf.logical_not(_is_val(ex["path"])))


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
        ds = _only_train_part(ds)
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


def numpy_split(b, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Every clip of one split as float32 arrays in [-1, 1], and their labels.

    Args:
        b: the built builder.
        split: the split name.
    """
    clips, labels = [], []
    for audio, label in load_splits(b, [split]).as_numpy_iterator():
        clips.append(audio.astype(np.float32) / 32768.0)
        labels.append(int(label))
    return clips, np.array(labels)


# ----------------------------------------------------------------------------- extra voices


def extra_voices_wanted(spec: str | None, flag: bool | None) -> bool:
    """Whether a run adds the Festival extra voices to its training data.

    Args:
        spec: the ``--data`` value.
        flag: ``--extra-voices`` (True) / ``--no-extra-voices`` (False), or None when
            neither was given: then the Fillets data and the real speakers get them (on
            the real speakers they raised the held-out mean balanced accuracy from 0.768
            to 0.801, docs/voice_gender.md); user data (whose classes may not be
            female/male) does not.
    """
    if flag is None:
        return data.parse_spec(spec)[0] in (data.DEFAULT_SPEC, data.REAL_SPEC)
    return bool(flag)


def extra_per_voice(limit: int | None) -> int:
    """Utterances per extra voice: a handful for ``--quick``/``--limit`` runs.

    Args:
        limit: the run's ``--limit``.
    """
    from . import festival

    return festival.QUICK_PER_VOICE if limit else festival.PER_VOICE


def extra_label_map(names: list[str]) -> list[int]:
    """Index in ``names`` of each extra-voice class (``female``, ``male`` order).

    Raises:
        DataError: the dataset's classes are not one female and one male class.
    """
    sexes = [_SEX_NAMES.get(n.strip().lower()) for n in names]
    if sorted(s for s in sexes if s) != ["female", "male"] or len(names) != 2:
        raise DataError(f"--extra-voices adds female/male speakers; this dataset's classes "
                        f"are {names} (use --no-extra-voices)")
    return [sexes.index(c) for c in data.GENDER_CLASSES]


def extra_voices_for(run, b):
    """The built extra-voice dataset a run trains with, or None (:func:`extra_voices_wanted`).

    Args:
        run: the verb's ``rnnkit.app.Run`` (``data``, ``extra_voices``, ``limit``, ``seed``).
        b: the built dataset the voices join.

    Raises:
        DataError: the classes are not female/male, or Festival or a voice is missing.
    """
    if not extra_voices_wanted(run.data, run.get("extra_voices")):
        return None
    extra_label_map(data.class_names(b))  # fail early on non female/male classes
    return data.prepare_extra(extra_per_voice(run.limit), run.seed)


def fold_examples(b, fold: dict, extra=None, pitch: bool = False,
                  seed: int = 1337) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The (train, val) example dicts of one training run, extra voices included.

    The extra voices are training data only: they join the training side (and, for data
    without a validation split, the early-stopping part by the same path hash as the
    training language's clips); they never enter a test split. Their labels are mapped to
    this dataset's class indices. With ``pitch``, every training example (extra voices
    included) carries its pitch copy (:mod:`.resynth`) under ``pitch_audio``; the
    early-stopping examples do not, so early stopping hears real recordings only.

    Args:
        b: the built builder.
        fold: an entry of :func:`folds_for`.
        extra: the built extra-voice builder (``data.prepare_extra``) or None.
        pitch: add each training clip's pitch copy.
        seed: the copies' seed.
    """
    from . import resynth

    def training_side(builder, splits, part):
        if not pitch:
            return load_examples(builder, splits, part)
        ds = resynth.paired(builder, splits, seed)
        return _only_train_part(ds) if part == "train" else ds

    if fold["val"]:
        train_ex, val_ex = training_side(b, fold["train"], "all"), load_examples(b, fold["val"])
    else:
        train_ex = training_side(b, fold["train"], "train")
        val_ex = load_examples(b, fold["train"], "val")
    if extra is not None:
        mapping = tf.constant(extra_label_map(data.class_names(b)), tf.int64)

        def relabel(ex):
            return {**ex, "label": tf.gather(mapping, tf.cast(ex["label"], tf.int64))}

        if fold["val"]:
            train_ex = train_ex.concatenate(
                training_side(extra, [data.EXTRA_SPLIT], "all").map(relabel))
        else:
            train_ex = train_ex.concatenate(
                training_side(extra, [data.EXTRA_SPLIT], "train").map(relabel))
            val_ex = val_ex.concatenate(
                load_examples(extra, [data.EXTRA_SPLIT], "val").map(relabel))
    return train_ex, val_ex


# ----------------------------------------------------------------------------- tf.data


def drop_too_short(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Training only: drop clips under the minimum length (a few Fillets files are empty).

    Args:
        ds: tuples whose first element is the audio.
    """
    min_len = int(MIN_SECONDS * SAMPLE_RATE)
    return ds.filter(lambda audio, *rest: tf.shape(audio)[0] >= min_len)


def _weight_key(label, speaker):
    # The graph side of loss_weights' "<label>\t<speaker>" keys: the two must agree.
    return tf.strings.join([tf.strings.as_string(label), speaker], separator="\t")


def loss_weights(labels: np.ndarray, speakers: list[str], num_classes: int,
                 by_speaker: bool) -> dict[str, float]:
    """Per-clip loss weights, keyed by class and speaker (:func:`train_dataset` looks them up).

    Every class gets the same total weight. Within a class, every clip weighs the same, or
    with ``by_speaker`` every speaker does: a speaker with 28 clips then counts as much as
    one with 200, so the few voices of a rare recording chain are not drowned out. The mean
    weight over all clips is 1 either way.

    Args:
        labels: (N,) class index of each training clip.
        speakers: the speaker of each clip.
        num_classes: number of classes (a class without clips gets no key).
        by_speaker: spread each class's weight equally over its speakers.

    Returns:
        ``"<label>\\t<speaker>"`` -> weight of each of that speaker's clips.
    """
    if len(labels) != len(speakers) or not len(labels):
        raise DataError(f"loss_weights needs one speaker per clip and at least one clip "
                        f"(got {len(labels)} labels, {len(speakers)} speakers)")
    n = len(labels)
    per_class = np.bincount(labels, minlength=num_classes)
    clips: dict[tuple[int, str], int] = {}
    for y, s in zip(labels.tolist(), speakers):
        clips[(y, s)] = clips.get((y, s), 0) + 1
    speakers_in = np.bincount([y for y, _ in clips], minlength=num_classes)
    weights = {}
    for (y, s), count in clips.items():
        if by_speaker:
            w = n / (num_classes * speakers_in[y] * count)
        else:
            w = n / (num_classes * per_class[y])
        weights[f"{y}\t{s}"] = float(w)
    return weights


_PITCH_STREAM = 7_919  # offset of the seed that picks clip or pitch copy for each view


def _to_float(audio: tf.Tensor) -> tf.Tensor:
    return tf.cast(audio, tf.float32) / 32768.0


def train_dataset(ds: tf.data.Dataset, batch_size: int, seed: int,
                  weights: dict[str, float], pitch_prob: float = 0.0) -> tf.data.Dataset:
    """Shuffled, augmented, padded batches ``({"waveform", "length"}, label, weight)``.

    Args:
        ds: (int16 audio, label, speaker) examples, or (audio, label, speaker, pitch copy)
            with ``pitch_prob``.
        batch_size: clips per batch.
        seed: shuffle/augmentation seed.
        weights: :func:`loss_weights` of these examples (a clip whose key is missing
            weighs 1).
        pitch_prob: the share of views that start from the clip's pitch copy instead of
            the clip (a clip without a copy is always heard as itself).
    """
    win, _ = window_samples()
    # A table cannot be empty: one key no clip can have ("" never names a class) stands in.
    keys, values = list(weights) or [""], list(weights.values()) or [1.0]
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string),
                                            tf.constant(values, tf.float32)),
        default_value=1.0)
    counter = tf.data.Dataset.counter()

    def view(index, example):
        audio, label, speaker, *copy = example
        if copy:
            # Its own seed stream: the views of a run without copies stay as they were.
            pick = tf.random.stateless_uniform(
                [], tf.stack([tf.cast(seed, tf.int64) + _PITCH_STREAM, index]))
            use = tf.logical_and(pick < pitch_prob, tf.size(copy[0]) > 0)
            audio = tf.cond(use, lambda: copy[0], lambda: audio)
        x = augment(_to_float(audio), tf.stack([tf.cast(seed, tf.int64), index]), win)
        weight = table.lookup(_weight_key(label, speaker))
        return ({"waveform": x, "length": tf.shape(x)[0]}, label, weight)

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
