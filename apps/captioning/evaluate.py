"""The ``evaluate`` verb: held-out captions against a baseline and the recognition ceiling.

Beam-search (and greedy) captions for the test pictures; corpus BLEU-1..4
(``rnnkit.modeling.bleu``) for single stamps and scenes separately, beside a
nearest-neighbour baseline computed in the same run; head-noun accuracy on single stamps
with the two recognisers the decoder draws object names from (the nearest training
single, the CNN's ImageNet top-1) and their union, the ceiling of any choice between
them; whether a scene caption names all its objects in order; caption faults (a/an
agreement, a noun named twice, words after the end; :mod:`.caption_faults`) over every
test caption, of the decoder as exported, of its raw output (without the in-graph fixes
of :mod:`.grammar`) and of the references themselves. Figures:
``reports/examples.png`` and every test caption in ``reports/captions.json``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from rnnkit.app import Evaluation, Run
from rnnkit.modeling.bleu import bleu_by_order

from . import data
from .features import Prepared, prepare_features
from .model import caption_features
from .splits import picture
from .train import data_options, imagenet_prior_weights, load_trained

__all__ = ["evaluate", "fault_counts", "head_noun_recognisers",
           "nearest_neighbour_captions", "objects_in_order"]

EXAMPLES_IN_GRID = 16


def nearest_neighbour_captions(train_pooled: np.ndarray, train_refs: list[list[str]],
                               query_pooled: np.ndarray) -> list[str]:
    """The baseline: the first reference caption of the training picture with the most
    similar pooled CNN features (cosine similarity).

    Args:
        train_pooled: (N, C) pooled features of the training pictures.
        train_refs: their reference captions.
        query_pooled: (M, C) pooled features of the pictures to caption.
    """
    a = train_pooled / (np.linalg.norm(train_pooled, axis=1, keepdims=True) + 1e-8)
    q = query_pooled / (np.linalg.norm(query_pooled, axis=1, keepdims=True) + 1e-8)
    out = []
    for s in range(0, len(q), 512):
        idx = (q[s:s + 512] @ a.T).argmax(axis=1)
        out += [train_refs[i][0] for i in idx]
    return out


def objects_in_order(caption: str, heads: list[str]) -> bool:
    """Whether ``caption`` names every head noun, in the given (left-to-right) order.

    Args:
        caption: a generated scene caption.
        heads: the scene's stamps' head nouns, left to right.
    """
    words = caption.split()
    pos = []
    for h in heads:
        hits = [j for j, w in enumerate(words) if data.noun_matches(h, w)]
        if not hits:
            return False
        pos.append(hits[0])
    return pos == sorted(pos)


def head_noun_recognisers(prep: Prepared, idx: list[int], model=None, vocab=None
                           ) -> dict[str, float]:
    """How often the two recognisers the decoder can draw on name a test single's head noun.

    * ``nearest_training_single``: the caption of the most similar training single stamp
      (cosine on pooled features), i.e. few-shot recognition from the training stamps;
    * ``imagenet_top1``: the head words of the CNN's own top ImageNet class;
    * ``either``: at least one of the two, an upper bound for any rule that picks between
      them (the decoder's two sources of object names).

    Args:
        prep: prepared features of a backbone with a bundled ImageNet classifier.
        idx: indices of the test single stamps.
        model, vocab: the trained captioner and its vocabulary; when its prior has more
            classes than ImageNet's (the training nouns, :mod:`.noun_prior`), the top
            word of that whole prior is scored too (``prior_top1``).
    """
    test, train = prep.splits["test"], prep.splits["train"]
    singles = [i for i, k in enumerate(train.kinds) if k == "single"]
    near = nearest_neighbour_captions(prep.pooled["train"][singles],
                                      [train.references[i] for i in singles],
                                      prep.pooled["test"][idx])
    kernel, bias, heads = imagenet_prior_weights(prep.backbone)
    top = (prep.pooled["test"][idx] @ kernel + bias).argmax(axis=1)
    a = np.array([data.noun_matches(test.heads[i], c) for i, c in zip(idx, near)])
    b = np.array([data.noun_matches(test.heads[i], " ".join(heads[c]))
                  for i, c in zip(idx, top)])
    out = {"nearest_training_single": round(float(a.mean()), 4),
           "imagenet_top1": round(float(b.mean()), 4),
           "either": round(float((a | b).mean()), 4)}
    if model is not None and getattr(model, "num_classes", 0) > len(heads):
        w, c = model.classifier.get_weights()
        logits = prep.pooled["test"][idx] @ w + c
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        words = (probs / probs.sum(axis=1, keepdims=True)) @ model.class_words.numpy()
        out["prior_top1"] = round(float(np.mean([
            data.noun_matches(test.heads[i], vocab.itos[int(k)])
            for i, k in zip(idx, words.argmax(axis=1))])), 4)
    return out


def fault_counts(captions: dict[str, list[str]], n_objects: list[int | None]
                 ) -> dict[str, dict[str, Any]]:
    """:func:`.caption_faults.count_caption_faults` of each named caption list.

    Args:
        captions: name -> one caption per test picture ("model_beam", "references", ...).
        n_objects: how many objects each picture holds (None where unknown).

    Returns:
        name -> {"article", "doubled_noun", "trailing", "faults", "with_fault",
        "extra_object", "captions", "examples"} (a few examples per kind).
    """
    from .caption_faults import count_caption_faults

    return {name: count_caption_faults(caps, n_objects, max_examples=3)
            for name, caps in captions.items()}


def _share(flags) -> float:
    return round(float(np.mean(flags)), 4)


def _kind_metrics(kind: str, idx: list[int], test, beam, greedy, nn, prep: Prepared,
                  model=None, vocab=None) -> dict[str, Any]:
    refs = [test.references[i] for i in idx]
    entry: dict[str, Any] = {
        "count": len(idx),
        "model_beam": bleu_by_order([beam[i] for i in idx], refs),
        "model_greedy": bleu_by_order([greedy[i] for i in idx], refs),
        "nearest_neighbour": bleu_by_order([nn[i] for i in idx], refs),
        "exact_match_beam": _share([beam[i] in test.references[i] for i in idx]),
        "exact_match_nearest_neighbour": _share([nn[i] in test.references[i] for i in idx]),
    }
    if kind == "single":
        heads = [test.heads[i] for i in idx]
        entry["head_noun_accuracy_beam"] = _share(
            [data.noun_matches(h, beam[i]) for h, i in zip(heads, idx)])
        entry["head_noun_accuracy_nearest_neighbour"] = _share(
            [data.noun_matches(h, nn[i]) for h, i in zip(heads, idx)])
        from rnnkit.backbones import OFFLINE_BACKBONES

        if prep.backbone in OFFLINE_BACKBONES:
            entry["head_noun_recognisers"] = head_noun_recognisers(prep, idx, model, vocab)
    if kind == "scene":
        scene_heads = [[data.head_noun(p) for p in data.scene_parts(test.references[i][0])]
                       for i in idx]
        entry["all_objects_in_order_beam"] = _share(
            [objects_in_order(beam[i], h) for h, i in zip(scene_heads, idx)])
        entry["all_objects_in_order_nearest_neighbour"] = _share(
            [objects_in_order(nn[i], h) for h, i in zip(scene_heads, idx)])
        # Share of the scenes' objects whose head noun the caption names (any order).
        entry["objects_named_beam"] = _share(
            [data.noun_matches(h or "", beam[i]) for hs, i in zip(scene_heads, idx) for h in hs])
    return entry


def _example_order(kinds: list[str], n: int) -> list[int]:
    """Evenly spaced indices, half singles and half scenes where both exist."""
    out = []
    for kind in sorted(set(kinds), reverse=True):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        take = max(1, n // len(set(kinds)))
        out += [idx[int(j)] for j in np.linspace(0, len(idx) - 1, min(take, len(idx)))]
    return out[:n]


def _headline(metrics: dict[str, Any]) -> dict[str, str]:
    """One printed row per picture kind: BLEU-1..4 of the model and the baseline, and the
    kind's own figures."""
    rows = {}
    for kind in ("single", "scene", "photo"):
        if kind not in metrics:
            continue
        e = metrics[kind]
        bleu = "/".join(f"{e['model_beam'][f'bleu{n}']:.1f}" for n in (1, 2, 3, 4))
        base = "/".join(f"{e['nearest_neighbour'][f'bleu{n}']:.1f}" for n in (1, 2, 3, 4))
        line = f"n={e['count']}  BLEU-1..4 {bleu}  nearest neighbour {base}"
        if "head_noun_accuracy_beam" in e:
            line += (f"  head noun {e['head_noun_accuracy_beam']:.1%} "
                     f"(NN {e['head_noun_accuracy_nearest_neighbour']:.1%})")
        if "objects_named_beam" in e:
            line += f"  objects named {e['objects_named_beam']:.1%}"
        if "all_objects_in_order_beam" in e:
            line += (f"  objects in order {e['all_objects_in_order_beam']:.1%} "
                     f"(NN {e['all_objects_in_order_nearest_neighbour']:.1%})")
        rows[kind] = line
        if "head_noun_recognisers" in e:
            r = e["head_noun_recognisers"]
            rows[f"{kind} recognisers"] = (
                f"head noun named by the nearest training single "
                f"{r['nearest_training_single']:.1%}, by ImageNet top-1 "
                f"{r['imagenet_top1']:.1%}, by either {r['either']:.1%} (the decoder's two "
                "sources of object names)"
                + (f"; the model's prior (ImageNet + training nouns) top word "
                   f"{r['prior_top1']:.1%}" if "prior_top1" in r else ""))
    if "caption_faults" in metrics:
        f = metrics["caption_faults"]

        def faults(name: str) -> str:
            c = f[name]
            return (f"{c['faults']} (article {c['article']}, doubled noun "
                    f"{c['doubled_noun']}, trailing {c['trailing']})")

        rows["caption faults"] = (
            f"over all {f['model_beam']['captions']} {metrics.get('split', 'test')} captions: "
            f"model {faults('model_beam')}, "
            f"before the in-graph fixes {faults('model_beam_raw')}, references "
            f"{faults('references')}")
    return rows


def evaluate(run: Run) -> Evaluation:
    """The ``evaluate`` verb (see the module docstring)."""
    from rnnkit.atomic import atomic_write_json

    from .figures import plot_examples

    model, vocab, summary = load_trained(run)
    spec, quick, limit = data_options(run)
    beam_width = run.beam_width
    prep = prepare_features(spec, quick, limit, run.seed, summary["backbone"])
    split = run.get("split") or "test"
    if split != "test":
        # Every function below reads "test": point it at the chosen held-out split.
        prep.splits["test"], prep.grid["test"], prep.pooled["test"] = (
            prep.splits[split], prep.grid[split], prep.pooled[split])
    test = prep.splits["test"]
    t0 = time.time()
    beam, _, _ = caption_features(model, vocab, prep.grid["test"], prep.pooled["test"],
                                  "beam", beam_width)
    greedy, _, _ = caption_features(model, vocab, prep.grid["test"], prep.pooled["test"],
                                    "greedy")
    decode_s = time.time() - t0
    raw, _, _ = caption_features(model, vocab, prep.grid["test"], prep.pooled["test"],
                                 "beam", beam_width, fixes=False)
    nn = nearest_neighbour_captions(prep.pooled["train"], prep.splits["train"].references,
                                    prep.pooled["test"])
    metrics: dict[str, Any] = {
        "split": split,
        "data": spec or "tuxpaint", "backbone": prep.backbone, "beam_width": beam_width,
        "test_pictures": len(test), "train_pictures": len(prep.splits["train"]),
        "vocab_size": len(vocab), "decoder_params": int(model.count_params()),
        "decode_seconds": round(decode_s, 2),
    }
    for kind in sorted(set(test.kinds)):
        idx = [i for i, k in enumerate(test.kinds) if k == kind]
        metrics[kind] = _kind_metrics(kind, idx, test, beam, greedy, nn, prep, model, vocab)
    metrics["all"] = {"model_beam": bleu_by_order(beam, test.references),
                      "nearest_neighbour": bleu_by_order(nn, test.references)}
    # Objects per picture: a single holds one stamp, a scene its stamps (distinct head
    # nouns); unknown for user data.
    n_objects = [len(s) if s else None for s in test.stamps]
    metrics["caption_faults"] = fault_counts(
        {"model_beam": beam, "model_beam_raw": raw, "references": [r[0] for r in test.references],
         "nearest_neighbour": nn}, n_objects)
    order = _example_order(test.kinds, EXAMPLES_IN_GRID)
    plot_examples([picture(test, i) for i in order],
                  [beam[i] for i in order], [test.references[i][0] for i in order],
                  [nn[i] for i in order], run.reports / "examples.png",
                  title=f"held-out pictures: beam-{beam_width} caption / reference / "
                        "nearest neighbour")
    atomic_write_json(run.reports / "captions.json", [
        {"kind": test.kinds[i], "reference": test.references[i][0], "beam": beam[i],
         "beam_raw": raw[i], "greedy": greedy[i], "nearest_neighbour": nn[i]} for i in range(len(test))])
    return Evaluation(metrics=metrics, headline=_headline(metrics),
                      title=f"captioning: {split} pictures ({len(test):,}), beam {beam_width}")
