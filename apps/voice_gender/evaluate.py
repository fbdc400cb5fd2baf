"""The ``evaluate`` verb: every fold with a test split, scored speaker-disjoint.

Each fold's model classifies its test split's clips whole (:func:`.model.classify`: 4 s
windows, probabilities averaged), once as recorded and once through a telephone channel
(300-3400 Hz). Beside it, the floor baseline trained on the same fold's training clips:
logistic regression on the mean and standard deviation of 20 MFCCs (librosa). The
headline is the mean balanced accuracy over the folds. Figures per fold: confusion
matrix, ROC curves (two classes) and training curves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from rnnkit.app import Evaluation, GradientProbe, Run
from rnnkit.errors import DataError
from rnnkit.inference import map_by_length
from rnnkit.reports import plot_confusion_matrix, plot_history, save_figure

from . import data, pipeline
from .augment import telephone
from .features import SAMPLE_RATE
from .model import classify

PROBE_CLIPS = 32  # held-out clips in the gradient-flow probe


def predict_arrays(model, clips: list[np.ndarray],
                   batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Windowed probabilities and status of float32 clips (batched in length order).

    Args:
        model: a trained model.
        clips: 1-D float32 arrays at 16 kHz.
        batch_size: clips per batch.

    Returns:
        (probabilities (N, K), status (N,) of ``ok`` / ``silent`` / ``too_short``).
    """
    fn = tf.function(lambda w, n: classify(model, w, n), reduce_retracing=True)

    def run_batch(batch: list[np.ndarray]) -> list[tuple[np.ndarray, str]]:
        width = max(1, max(len(c) for c in batch))
        wave = np.zeros((len(batch), width), np.float32)
        for r, clip in enumerate(batch):
            wave[r, : len(clip)] = clip
        out = fn(tf.constant(wave), tf.constant([len(c) for c in batch], tf.int32))
        return list(zip(out["probabilities"].numpy(), (s.decode() for s in out["status"].numpy())))

    results = map_by_length(run_batch, clips, batch_size=batch_size)
    probs = np.array([p for p, _ in results], np.float32).reshape(len(clips),
                                                                  model.output_shape[-1])
    status = np.array([s for _, s in results], object)
    return probs, status


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
    recall = {n: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None
              for i, n in enumerate(names)}
    out = {"balanced_accuracy": float(balanced_accuracy_score(y, pred)),
           "accuracy": float((pred == y).mean()), "recall": recall,
           "confusion_matrix": cm.tolist(), "n": len(y)}
    if len(names) == 2 and len(set(y.tolist())) == 2:
        out["roc_auc"] = float(roc_auc_score(y, probs[:, 1]))
    return out


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """ROC curves of several scorers on the same axes, written atomically.

    Args:
        curves: label -> (true labels 0/1, score of class 1).
        path: the PNG file.
        title: the figure title.
    """
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

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
    return save_figure(fig, path)


def split_speakers(b, split: str) -> np.ndarray:
    """The speaker id of every clip of one split, in the order of :func:`pipeline.numpy_split`.

    Args:
        b: the built builder.
        split: the split name.
    """
    ds = pipeline.load_examples(b, [split]).map(lambda ex: ex["speaker"])
    return np.array([s.decode() for s in ds.as_numpy_iterator()], object)


def source_of(speaker_id: str) -> str:
    """The source of a documented speaker (:mod:`.speakers`), or ``data`` for user speakers."""
    from .speakers import speaker

    try:
        return speaker(speaker_id).source
    except KeyError:
        return "data"


def speaker_metrics(y: np.ndarray, probs: np.ndarray, tel_probs: np.ndarray,
                    spk: np.ndarray, names: list[str]) -> dict[str, dict[str, Any]]:
    """Share of each held-out speaker's clips classified right, full and telephone band.

    Every speaker has one class, so the share right is that speaker's recall (what the
    target "no speaker below 0.80" reads).

    Args:
        y: true labels.
        probs: model probabilities, full band.
        tel_probs: model probabilities, telephone band.
        spk: speaker id per clip.
        names: the class names.
    """
    pred, tel_pred = probs.argmax(axis=1), tel_probs.argmax(axis=1)
    out = {}
    for s in sorted(set(spk.tolist())):
        m = spk == s
        out[s] = {"label": names[int(y[m][0])], "source": source_of(s), "clips": int(m.sum()),
                  "right": float((pred[m] == y[m]).mean()),
                  "telephone_right": float((tel_pred[m] == y[m]).mean())}
    return out


def plot_speakers(per_speaker: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Bar chart of the share of clips right per held-out speaker (telephone band as ticks).

    Args:
        per_speaker: speaker id -> entry of :func:`speaker_metrics`.
        path: the PNG file.
        title: the figure title.
    """
    import matplotlib.pyplot as plt

    items = sorted(per_speaker.items(), key=lambda kv: (kv[1]["source"], kv[1]["label"], kv[0]))
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(items) + 1.2))
    ypos = np.arange(len(items))
    colours = ["tab:red" if e["label"] == "female" else "tab:blue" for _, e in items]
    ax.barh(ypos, [e["right"] for _, e in items], color=colours, alpha=0.8)
    ax.plot([e["telephone_right"] for _, e in items], ypos, "k|", markersize=9,
            label="telephone band (300-3400 Hz)")
    ax.axvline(0.8, color="grey", ls=":", lw=1)
    ax.set_yticks(ypos, [f"{k} ({e['clips']})" for k, e in items], fontsize=7)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share of the speaker's clips right (held out; red female, blue male)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path, dpi=110)


def _test_folds(run: Run) -> tuple[Any, list[str], list[dict[str, Any]]]:
    """The built dataset, its class names and the trained folds that have a test split."""
    b = data.prepare(run.data, run.limit, run.seed)
    trained = run.run_config()["train"].get("folds", {})
    folds = []
    for fold in pipeline.folds_for(b):
        if fold["test"]:
            if fold["name"] not in trained:
                raise DataError(f"fold {fold['name']} of --data {run.data} was not trained in "
                                f"{run.output}: run `rnnkit voice_gender train` with the same "
                                "--data and --limit")
            folds.append({**fold, "model": trained[fold["name"]]["model"]})
    if not folds:
        raise DataError("this dataset has no test split to evaluate on")
    return b, data.class_names(b), folds


def evaluate(run: Run) -> Evaluation:
    """The ``evaluate`` verb: see the module docstring."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from tqdm import tqdm

    b, names, folds = _test_folds(run)
    cache: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
    mfcc_cache: dict[str, np.ndarray] = {}

    def split_data(split: str):
        if split not in cache:
            cache[split] = pipeline.numpy_split(b, split)
            mfcc_cache[split] = np.stack([mfcc_stats(c) for c in tqdm(
                cache[split][0], desc=f"MFCC baseline features {split}", unit="clip")])
        return cache[split]

    metrics: dict[str, Any] = {"data": run.data, "class_names": names, "folds": {}}
    rows: dict[str, Any] = {}
    per_speaker: dict[str, dict[str, Any]] = {}
    pooled: dict[str, list[np.ndarray]] = {"y": [], "pred": [], "tel": [], "base": [], "spk": []}
    for fold in folds:
        model = run.load_model(fold["model"])
        test_split = fold["test"][0]
        clips, y = split_data(test_split)
        probs, status = predict_arrays(model, clips)
        result = classification_metrics(y, probs, names)
        result["flagged"] = {s: int((status == s).sum()) for s in ("silent", "too_short")}
        tel_probs, _ = predict_arrays(model, [telephone(c).numpy() for c in clips])
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
        spk = split_speakers(b, test_split)
        result["speakers"] = speaker_metrics(y, probs, tel_probs, spk, names)
        per_speaker.update(result["speakers"])
        for key, value in (("y", y), ("pred", probs.argmax(axis=1)),
                           ("tel", tel_probs.argmax(axis=1)), ("base", base_probs.argmax(axis=1)),
                           ("spk", spk)):
            pooled[key].append(value)
        metrics["folds"][fold["name"]] = result
        title = f"{fold['name']}: train {'+'.join(fold['train'])}, test {test_split}"
        plot_confusion_matrix(np.array(result["confusion_matrix"]), names,
                              run.reports / f"confusion_{fold['name']}.png", title=title)
        history = run.model_path(fold["model"]).parent / "history.json"
        if history.is_file():
            plot_history(json.loads(history.read_text()),
                         run.reports / f"history_{fold['name']}.png",
                         title=f"training {fold['name']}")
        if len(names) == 2:
            plot_roc({"model": (y, probs[:, 1]), "model, telephone band": (y, tel_probs[:, 1]),
                      "MFCC logreg baseline": (y, base_probs[:, 1])},
                     run.reports / f"roc_{fold['name']}.png", f"ROC {fold['name']} ({names[1]})")
        rows[f"{fold['name']} balanced acc"] = result["balanced_accuracy"]
        rows[f"{fold['name']} baseline"] = result["baseline_mfcc_logreg"]["balanced_accuracy"]
        rows[f"{fold['name']} telephone band"] = result["telephone_band"]["balanced_accuracy"]
    _speaker_summary(metrics, rows, per_speaker, pooled, names, run)
    bal = [m["balanced_accuracy"] for m in metrics["folds"].values()]
    base = [m["baseline_mfcc_logreg"]["balanced_accuracy"] for m in metrics["folds"].values()]
    metrics["headline"] = {"mean_balanced_accuracy": float(np.mean(bal)),
                           "baseline_mean_balanced_accuracy": float(np.mean(base)),
                           "folds": len(bal)}
    final = run.model_path()
    if final.is_file():
        metrics["model"] = {"params": int(run.load_model().count_params()),
                            "keras_file_bytes": final.stat().st_size}
    if run.limit:
        metrics["note"] = f"--limit {run.limit}: a subset, not the reported figure"
    rows["mean balanced acc"] = metrics["headline"]["mean_balanced_accuracy"]
    rows["mean baseline"] = metrics["headline"]["baseline_mean_balanced_accuracy"]
    return Evaluation(metrics=metrics, headline=rows,
                      title=f"voice_gender evaluation ({run.data}, speaker-disjoint)")


def _speaker_summary(metrics: dict[str, Any], rows: dict[str, Any],
                     per_speaker: dict[str, dict[str, Any]], pooled: dict[str, list[np.ndarray]],
                     names: list[str], run: Run) -> None:
    """Per-speaker and per-source figures over every test fold (each speaker tested once)."""
    from sklearn.metrics import balanced_accuracy_score

    if not per_speaker:
        return
    y = np.concatenate(pooled["y"])
    src = np.array([source_of(s) for s in np.concatenate(pooled["spk"])], object)
    by_source = {}
    for source in sorted(set(src.tolist())):
        m = src == source
        by_source[source] = {
            "clips": int(m.sum()),
            "speakers": sum(1 for e in per_speaker.values() if e["source"] == source),
            "balanced_accuracy": float(balanced_accuracy_score(y[m], pooled_pred(pooled, "pred")[m]))
            if len(set(y[m].tolist())) > 1 else None,
            "accuracy": float((pooled_pred(pooled, "pred")[m] == y[m]).mean()),
            "telephone_accuracy": float((pooled_pred(pooled, "tel")[m] == y[m]).mean()),
            "baseline_accuracy": float((pooled_pred(pooled, "base")[m] == y[m]).mean())}
    worst = min(per_speaker, key=lambda s: per_speaker[s]["right"])
    right = [e["right"] for e in per_speaker.values()]
    tel = [e["telephone_right"] for e in per_speaker.values()]
    # Mean over speakers within each sex, then over the sexes: every speaker counts once,
    # whatever their clip count, and the 10 women weigh as much as the 29 men.
    by_sex = {n: [e["right"] for e in per_speaker.values() if e["label"] == n] for n in names}
    tel_by_sex = {n: [e["telephone_right"] for e in per_speaker.values() if e["label"] == n]
                  for n in names}
    metrics["speakers"] = per_speaker
    metrics["sources"] = by_source
    metrics["speaker_summary"] = {
        "speakers": len(per_speaker), "mean_right": float(np.mean(right)),
        "balanced_speaker_mean": float(np.mean([np.mean(v) for v in by_sex.values() if v])),
        "telephone_balanced_speaker_mean": float(np.mean([np.mean(v)
                                                          for v in tel_by_sex.values() if v])),
        "telephone_mean_right": float(np.mean(tel)),
        "worst_speaker": worst, "worst_right": per_speaker[worst]["right"],
        "speakers_below_0.80": sorted(s for s, e in per_speaker.items() if e["right"] < 0.8),
        "pooled_balanced_accuracy": float(balanced_accuracy_score(y, pooled_pred(pooled, "pred"))),
        "pooled_telephone_balanced_accuracy": float(
            balanced_accuracy_score(y, pooled_pred(pooled, "tel"))),
        "pooled_baseline_balanced_accuracy": float(
            balanced_accuracy_score(y, pooled_pred(pooled, "base")))}
    plot_speakers(per_speaker, run.reports / "speakers.png",
                  f"held-out speakers ({run.data}, {len(per_speaker)} speakers)")
    summary = metrics["speaker_summary"]
    rows["speakers: balanced mean right"] = summary["balanced_speaker_mean"]
    rows["speakers: telephone balanced mean"] = summary["telephone_balanced_speaker_mean"]
    rows[f"worst speaker ({worst})"] = summary["worst_right"]
    rows["speakers below 0.80"] = len(summary["speakers_below_0.80"])
    rows["pooled balanced acc"] = summary["pooled_balanced_accuracy"]
    rows["pooled telephone balanced acc"] = summary["pooled_telephone_balanced_accuracy"]
    rows["pooled baseline balanced acc"] = summary["pooled_baseline_balanced_accuracy"]
    for source, entry in by_source.items():
        rows[f"source {source} acc (tel, baseline)"] = (
            f"{entry['accuracy']:.3f} ({entry['telephone_accuracy']:.3f}, "
            f"{entry['baseline_accuracy']:.3f})")


def pooled_pred(pooled: dict[str, list[np.ndarray]], key: str) -> np.ndarray:
    """One pooled prediction array (``pred``, ``tel`` or ``base``) over every test fold."""
    return np.concatenate(pooled[key])


def gradient_probe(run: Run) -> GradientProbe:
    """The first test fold's model on :data:`PROBE_CLIPS` of its held-out clips.

    The inputs are the clips' first windows (4 s, as the network trains), padded into one
    batch with their lengths; the loss is the training loss (sparse categorical
    cross-entropy on the softmax output).
    """
    import keras

    b, _, folds = _test_folds(run)
    fold = folds[0]
    batches = pipeline.eval_dataset(pipeline.load_splits(b, fold["test"]), PROBE_CLIPS)
    inputs, targets = next(iter(batches))
    return GradientProbe(model=run.load_model(fold["model"]), inputs=inputs, targets=targets,
                         loss=keras.losses.SparseCategoricalCrossentropy())
