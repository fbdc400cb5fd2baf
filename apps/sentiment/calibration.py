"""Calibration: temperature scaling, expected calibration error, reliability diagram.

Temperature scaling (Guo et al., ICML 2017) divides the logit by one scalar ``T`` fitted
on the validation split to minimise the negative log-likelihood. It changes no decision
(the sign of the logit is kept) and only the confidence, so accuracy is unchanged; ``T``
is folded into the saved model (:class:`apps.sentiment.model.ScaleLogit`), so the export
serves calibrated probabilities.
"""

from __future__ import annotations

import os

import numpy as np

from rnnkit.reports import save_figure


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + exp(-|z|)) form: stable for large |z|.
    return float(np.mean(np.maximum(z, 0) - z * labels + np.log1p(np.exp(-np.abs(z)))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Return the temperature in [0.05, 20] that minimises the NLL of ``sigmoid(logit / T)``.

    A golden-section search on log T: the NLL is unimodal in T for a fixed set of logits.

    Args:
        logits: positive-class logits, shape ``(N,)``.
        labels: 0/1 labels, shape ``(N,)``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if logits.shape != labels.shape or logits.size == 0:
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} must be the same, "
                         "non-empty shape")
    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(logits, labels, np.exp(a)), _nll(logits, labels, np.exp(b))
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2.0))


def reliability(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15
) -> dict[str, object]:
    """Expected calibration error of a binary classifier, on the predicted class.

    Predictions are binned by confidence ``max(p, 1 - p)`` into ``bins`` equal-width bins
    on [0.5, 1]; ECE is the example-weighted mean of ``|accuracy - confidence|`` over bins.

    Args:
        probabilities: P(positive), shape ``(N,)``.
        labels: 0/1 labels.
        bins: number of confidence bins.

    Returns:
        ``{"ece", "bins": [{"lo", "hi", "count", "confidence", "accuracy"}, ...]}``.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = np.maximum(probs, 1.0 - probs)
    correct = ((probs >= 0.5).astype(np.int64) == labels).astype(np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        row = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count,
               "confidence": float(confidence[mask].mean()) if count else None,
               "accuracy": float(correct[mask].mean()) if count else None}
        if count:
            ece += count / len(probs) * abs(row["accuracy"] - row["confidence"])
        rows.append(row)
    return {"ece": float(ece), "bins": rows}


def plot_reliability(
    curves: dict[str, dict[str, object]], path: str | os.PathLike[str], title: str = ""
) -> str:
    """Plot reliability diagrams (accuracy against confidence per bin) into one PNG.

    Args:
        curves: label -> the dict from :func:`reliability`.
        path: the PNG to write.
        title: figure title.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0.5, 1.0], [0.5, 1.0], color="grey", linestyle="--", label="perfect calibration")
    for label, curve in curves.items():
        pts = [(r["confidence"], r["accuracy"], r["count"]) for r in curve["bins"] if r["count"]]
        if not pts:
            continue
        conf, acc, count = map(np.asarray, zip(*pts))
        ax.plot(conf, acc, marker="o", label=f"{label} (ECE {curve['ece']:.3f})")
    ax.set_xlabel("confidence (predicted class)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0.4, 1.0)
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return str(save_figure(fig, path))
