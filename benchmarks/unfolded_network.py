"""Pictures of the unfolded Elman network inside the sentiment classifier.

Draws, for a trained sentiment model (the bidirectional ``SimpleRecurrentLayer`` over word
embeddings of ``apps.sentiment``):

* ``unfolded_review.png``: one test review, token by token. Top: the running positive
  probability, i.e. what the model says after reading only the first ``t`` tokens (each
  prefix scored as a review of its own). Below: heat maps of the hidden state ``h_t`` of
  the forward and the backward direction under the tokens: one row per unit, ordered by
  the weight the output layer gives that unit's mean over time (top: units whose high
  values push towards "positive"). The same weights ``W_x, W_h, b`` make every column: this
  is the network unfolded over time.
* ``activations.png``: over a batch of test reviews, the distribution of the
  pre-activations ``a_t = x_t W_x + h_{t-1} W_h + b`` (recomputed here in NumPy from the
  layer's weights and checked against the layer's own states) and of the states
  ``h_t = tanh(a_t)``, with the share of saturated units (``|h| > 0.99``).
* ``gradient_flow.png``: ``rnnkit.gradient_flow`` on a batch of test reviews (the model's
  loss gradient with respect to each step's pre-activation, against the distance from the
  review's end).

Run:

    .venv/bin/python benchmarks/unfolded_network.py --model runs/sentiment/model.keras
    .venv/bin/python benchmarks/unfolded_network.py          # trains a small model first

Without ``--model`` (or when the file does not exist) it trains a small classifier on
real IMDB reviews (``--train-reviews``, default 6,000, three epochs; about a minute or
two on two cores) with the sentiment app's own data pipeline and model builder. Outputs go
to ``--output`` (default ``runs/unfolded_network``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_TOKENS_DRAWN = 70


def _save(fig, path: Path) -> None:
    from rnnkit.reports import save_figure

    save_figure(fig, path)


def train_small_model(reviews: int, seed: int, epochs: int = 3) -> Any:
    """Train a small string -> logit sentiment model on real IMDB reviews (one or two min).

    Uses ``apps.sentiment``'s data loader, vectorizer, token pipeline and model builders
    with smaller sizes (vocabulary 10,000, embedding 64, 48 units per direction, reviews
    cut at 200 tokens).

    Args:
        reviews: training reviews (the app's seeded split, cut to this many per split).
        seed: seed of the split and of the initialisation.
        epochs: training epochs.
    """
    import keras

    from apps.sentiment import data
    from apps.sentiment.model import build_classifier, build_end_to_end, make_vectorizer
    from apps.sentiment.train import bucketed, token_dataset

    keras.utils.set_random_seed(seed)
    splits = data.load_splits(None, seed, reviews)
    vectorizer = make_vectorizer(10_000)
    vectorizer.adapt(splits["train"].map(lambda t, y: t).batch(512))
    max_len = 200
    train_ds = bucketed(token_dataset(splits["train"], vectorizer, max_len), 64, max_len, seed)
    val_ds = bucketed(token_dataset(splits["validation"], vectorizer, max_len), 64, max_len,
                      None)
    classifier = build_classifier(vectorizer.vocabulary_size(), 64, 48, 0.3, 0.4)
    classifier.compile(
        optimizer=keras.optimizers.Adam(2e-3, clipnorm=1.0),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
    )
    started = time.perf_counter()
    history = classifier.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=2)
    print(f"trained the small model in {time.perf_counter() - started:.0f} s; validation "
          f"accuracy {history.history['val_accuracy'][-1]:.3f}")
    inference = build_classifier(vectorizer.vocabulary_size(), 64, 48)
    inference.set_weights(classifier.get_weights())
    return build_end_to_end(vectorizer, inference, max_len)


def load_model(path: str) -> Any:
    """Load the sentiment app's end-to-end model (``runs/sentiment/model.keras``)."""
    import keras

    import apps.sentiment.ngrams  # noqa: F401  (registers the app's custom layers)

    return keras.saving.load_model(path, compile=False)


def split_model(model: Any) -> tuple[Any, Any, Any]:
    """``(vectorizer, clip, classifier)`` of the app's end-to-end string -> logit model."""
    import keras

    from rnnkit.gradient_flow import find_recurrent_layers

    vectorizer = clip = classifier = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.TextVectorization):
            vectorizer = layer
        elif type(layer).__name__ == "ClipTokens":
            clip = layer
        elif isinstance(layer, keras.Model) and find_recurrent_layers(layer):
            classifier = layer
    if vectorizer is None or classifier is None:
        raise ValueError("the model is not the sentiment app's end-to-end model (expected a "
                         "TextVectorization and a classifier containing SimpleRecurrentLayer)")
    return vectorizer, clip, classifier


class Probe:
    """Reads the embeddings, the bidirectional states and the logit of the classifier."""

    def __init__(self, classifier: Any) -> None:
        import keras

        self.classifier = classifier
        birnn = classifier.get_layer("birnn")
        self.directions = (birnn.forward_layer, birnn.backward_layer)
        self.units = birnn.forward_layer.units
        self.model = keras.Model(
            classifier.inputs,
            [classifier.get_layer("embedding").output, birnn.output, classifier.output],
        )
        head = classifier.get_layer("logit").get_weights()[0][:, 0]
        # MaxMeanPool concatenates [max (2H), mean (2H)]: the mean part's weights.
        self.mean_weights = head[2 * self.units:]

    def __call__(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        emb, states, logit = self.model(ids, training=False)
        return np.asarray(emb), np.asarray(states), np.asarray(logit)[:, 0]

    def preactivations(self, emb: np.ndarray, states: np.ndarray,
                       mask: np.ndarray) -> list[np.ndarray]:
        """``a_t`` of both directions at unmasked steps (flattened), from the weights.

        The forward direction's previous state is ``h_{t-1}``, the backward one's is
        ``h_{t+1}`` (it reads the review from the end; states outside the review are 0).
        """
        out = []
        for k, layer in enumerate(self.directions):
            wx, wh, b = (np.asarray(w, np.float64) for w in layer.get_weights())
            h = states[..., k * self.units:(k + 1) * self.units].astype(np.float64)
            h = np.where(mask[..., None], h, 0.0)
            prev = np.zeros_like(h)
            if k == 0:
                prev[:, 1:] = h[:, :-1]
            else:
                prev[:, :-1] = h[:, 1:]
            a = emb.astype(np.float64) @ wx + b + prev @ wh
            # The recomputation must reproduce the layer's own states.
            err = np.abs(np.tanh(a) - h)[mask].max()
            if err > 1e-3:
                raise RuntimeError(f"pre-activations do not reproduce the states (max error "
                                   f"{err:.2e}); is the activation tanh?")
            out.append(a[mask])
        return out


def tokens_of(vectorizer: Any, clip: Any, text: str) -> tuple[np.ndarray, list[str]]:
    """The review's token ids as the model sees them (no padding) and their words."""
    import tensorflow as tf

    ids = vectorizer(tf.constant([text]))
    if clip is not None:
        ids = clip(ids)
    ids = np.asarray(ids)[0]
    ids = ids[ids != 0]
    vocab = vectorizer.get_vocabulary()
    return ids, [vocab[i] for i in ids]


def pick_review(texts: list[str], labels: np.ndarray, vectorizer: Any, clip: Any,
                probe: Probe) -> int:
    """A short test review (25-70 tokens) the model classifies correctly, with a turn.

    Among such reviews, the one whose running probability moves most (largest range),
    so the picture shows the state changing its mind.
    """
    best, best_score, tried = 0, -1.0, 0
    for i, text in enumerate(texts):
        ids, _ = tokens_of(vectorizer, clip, text)
        if not 25 <= len(ids) <= MAX_TOKENS_DRAWN:
            continue
        tried += 1
        if tried > 40:
            break
        running = running_probability(probe, ids)
        if (running[-1] >= 0.5) != bool(labels[i]):
            continue
        score = float(running.max() - running.min())
        if score > best_score:
            best, best_score = i, score
    return best


def running_probability(probe: Probe, ids: np.ndarray) -> np.ndarray:
    """P(positive | first t tokens) for t = 1..len(ids): every prefix scored in one batch."""
    n = len(ids)
    # One fixed (MAX, MAX) shape for every review, so the compiled loops compile once;
    # the padding (id 0) is masked.
    size = max(n, MAX_TOKENS_DRAWN)
    prefixes = np.zeros((size, size), np.int64)
    for t in range(n):
        prefixes[t, :t + 1] = ids[:t + 1]
    _, _, logits = probe(prefixes)
    return 1.0 / (1.0 + np.exp(-logits[:n]))


def draw_review(probe: Probe, ids: np.ndarray, words: list[str], label: int,
                path: Path) -> dict[str, Any]:
    """The unfolded-network picture of one review (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids, words = ids[:MAX_TOKENS_DRAWN], words[:MAX_TOKENS_DRAWN]
    n = len(ids)
    _, states, logit = probe(ids[None, :])
    running = running_probability(probe, ids)
    h = probe.units
    order = np.argsort(-probe.mean_weights[:h]), np.argsort(-probe.mean_weights[h:])
    fig, axes = plt.subplots(
        3, 1, figsize=(max(9.0, 0.19 * n + 2.5), 9.5), sharex=True,
        gridspec_kw={"height_ratios": [1.0, 2.2, 2.2]},
    )
    x = np.arange(n)
    ax = axes[0]
    ax.plot(x, running, "-o", color="C2", markersize=3)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("P(positive)\nafter t tokens")
    truth = "positive" if label else "negative"
    ax.set_title(f"one test review ({truth}; the model says P(positive) = "
                 f"{1 / (1 + np.exp(-logit[0])):.2f} after all {n} tokens)", fontsize=10)
    ax.grid(alpha=0.3)
    for k, (ax, name) in enumerate(zip(axes[1:], ("forward", "backward"))):
        block = states[0, :, k * h:(k + 1) * h][:, order[k]].T
        image = ax.imshow(block, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1,
                          interpolation="nearest")
        ax.set_ylabel(f"{name} units\n(top: push to positive)")
        ax.set_yticks([])
        arrow = "reads left to right" if k == 0 else "reads right to left"
        ax.set_title(f"{name} direction: h_t = tanh(x_t W_x + h_(t-1) W_h + b), {arrow}",
                     fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01, label="h_t")
    axes[-1].set_xticks(x, words, rotation=90, fontsize=8)
    axes[-1].set_xlim(-0.5, n - 0.5)
    fig.tight_layout()
    _save(fig, path)
    return {"tokens": n, "final_probability": float(running[-1]),
            "running_min": float(running.min()), "running_max": float(running.max())}


def draw_activations(probe: Probe, ids: np.ndarray, path: Path) -> dict[str, float]:
    """Histograms of pre-activations and states over a batch (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emb, states, _ = probe(ids)
    mask = ids != 0
    pre = probe.preactivations(emb, states, mask)
    h = probe.units
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    stats = {}
    for k, name in enumerate(("forward", "backward")):
        hs = states[..., k * h:(k + 1) * h][mask].ravel()
        a = pre[k].ravel()
        sat = float(np.mean(np.abs(hs) > 0.99))
        stats[f"{name}_saturated"] = sat
        stats[f"{name}_preactivation_std"] = float(a.std())
        axes[0].hist(a, bins=120, range=(-6, 6), histtype="step", lw=1.4, density=True,
                     label=f"{name}: std {a.std():.2f}; |a| > 2.65 (|tanh| > 0.99): "
                           f"{np.mean(np.abs(a) > 2.65):.0%}")
        axes[1].hist(hs, bins=100, range=(-1, 1), histtype="step", lw=1.4, density=True,
                     label=f"{name}: saturated (|h| > 0.99) {sat:.0%}")
    grid = np.linspace(-6, 6, 200)
    twin = axes[0].twinx()
    twin.plot(grid, np.tanh(grid), color="k", lw=0.8, ls=":")
    twin.set_ylabel("tanh(a) (dotted)")
    axes[0].set_xlabel("pre-activation a_t = x_t W_x + h_{t-1} W_h + b")
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=8, loc="upper left")
    axes[1].set_xlabel("state h_t = tanh(a_t)")
    axes[1].set_ylabel("density")
    axes[1].legend(fontsize=8, loc="upper center")
    reviews, steps = int(mask.shape[0]), int(mask.sum())
    fig.suptitle(f"activations of the unfolded network over {reviews} test reviews "
                 f"({steps:,} steps, {h} units per direction)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return stats


def main(argv: list[str] | None = None) -> int:
    """Draw the three pictures; print where they are and a few numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None,
                        help="end-to-end sentiment model (default: train a small one)")
    parser.add_argument("--output", default="runs/unfolded_network")
    parser.add_argument("--train-reviews", type=int, default=6000)
    parser.add_argument("--text", default=None, help="draw this text instead of a test review")
    parser.add_argument("--batch", type=int, default=128,
                        help="test reviews for the distributions and the gradient flow")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)
    if args.batch < 2 or args.train_reviews < 100:
        parser.error("--batch must be at least 2 and --train-reviews at least 100")

    import keras
    import tensorflow as tf

    from apps.sentiment import data
    from rnnkit.atomic import atomic_write_json
    from rnnkit.gradient_flow import write_gradient_flow_report

    out = Path(args.output)
    if args.model and Path(args.model).exists():
        model, source = load_model(args.model), args.model
    else:
        if args.model:
            print(f"{args.model} does not exist: training a small model instead")
        model = train_small_model(args.train_reviews, args.seed)
        source = f"small model trained here on {args.train_reviews} IMDB reviews"
    vectorizer, clip, classifier = split_model(model)
    probe = Probe(classifier)

    # The seeded split cut to --train-reviews per split: its test reviews are a subset of
    # the full split's test reviews, so neither model has trained on them (the app trains
    # with the same default seed).
    test_texts, test_labels = data.as_numpy(
        data.load_splits(None, args.seed, args.train_reviews)["test"])
    if args.text:
        index, text, label = -1, args.text, -1
    else:
        index = pick_review(test_texts, test_labels, vectorizer, clip, probe)
        text, label = test_texts[index], int(test_labels[index])
    ids, words = tokens_of(vectorizer, clip, text)
    if len(ids) == 0:
        raise SystemExit("the text has no tokens the model knows")
    review = draw_review(probe, ids, words, label, out / "unfolded_review.png")

    batch_texts = test_texts[:args.batch]
    batch_ids = vectorizer(tf.constant(batch_texts))
    batch_ids = np.asarray(clip(batch_ids) if clip is not None else batch_ids)
    stats = draw_activations(probe, batch_ids, out / "activations.png")
    flow = write_gradient_flow_report(
        classifier, batch_ids, np.asarray(test_labels[:args.batch], np.float32)[:, None], out,
        loss_fn=keras.losses.BinaryCrossentropy(from_logits=True),
        title=f"sentiment classifier: gradient flow through time ({args.batch} test reviews)",
    )
    summary = {"model": source, "review_index": index, "review": review, "activations": stats,
               "gradient_flow": flow}
    atomic_write_json(out / "unfolded_network.json", summary)
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}/unfolded_review.png, activations.png, gradient_flow.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
