"""How well frozen CNN features recognise a new drawing: 1-nearest-neighbour and
nearest-class-mean head-noun accuracy of the held-out Tux Paint singles (two composites
each) against galleries of training drawings: the training stamps, + the SVG-only stamps,
+ the emoji art sets, and the emoji alone; one line per backbone and gallery.

    python benchmarks/captioning_recognition.py efficientnet_lite0 efficientnet_lite2

(from the repository root; fetches the stamps, the emoji art sets and the weights through
the app's own readers, all cached).

    python benchmarks/captioning_recognition.py by-art-set efficientnet_lite0

holds out one art set at a time (Tux Paint's held-out test singles, or one emoji artist's
singles) and names each held-out picture by its nearest training single of every other
set (1-NN on pooled features, cosine), from the app's cached features of
``--data tuxpaint+svg+emoji`` (run ``rnnkit captioning prepare --data tuxpaint+svg+emoji``
first, or it computes them).
"""
import sys
import time

import numpy as np
import tensorflow as tf

from apps.captioning import data, emoji, svg_stamps
from rnnkit.backbones import get_backbone


def by_art_set(backbone: str) -> None:
    """One line per held-out art set: 1-NN head-noun accuracy against all other sets."""
    from apps.captioning.features import prepare_features

    prep = prepare_features("tuxpaint+svg+emoji", False, None, 1337, backbone)
    tr, te = prep.splits["train"], prep.splits["test"]

    def art(stamp_ids):
        first = stamp_ids[0]
        return first.split("/")[1] if first.startswith("emoji/") else "tuxpaint"

    singles = [i for i, k in enumerate(tr.kinds) if k == "single"]
    feats = prep.pooled["train"][singles]
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    heads = [tr.heads[i] for i in singles]
    sets = np.array([art(tr.stamps[i]) for i in singles])
    tq = [i for i, k in enumerate(te.kinds) if k == "single"]
    tfeat = prep.pooled["test"][tq] / np.linalg.norm(prep.pooled["test"][tq], axis=1,
                                                     keepdims=True)
    cases = {"tuxpaint (held-out test singles)": (tfeat, [te.heads[i] for i in tq],
                                                   "tuxpaint")}
    for name in sorted(set(sets) - {"tuxpaint"}):
        m = sets == name
        cases[name] = (feats[m], [h for h, k in zip(heads, m) if k], name)
    for label, (q, qh, held) in cases.items():
        keep = sets != held
        g, gh = feats[keep], [h for h, k in zip(heads, keep) if k]
        nn = (q @ g.T).argmax(1)
        acc = np.mean([data.noun_matches(h, gh[j]) for h, j in zip(qh, nn)])
        print(f"{backbone}: held out {label}: {len(q)} pictures, gallery {len(g)} singles of "
              f"the other sets: head noun 1-NN {acc:.3f}")


if sys.argv[1:2] == ["by-art-set"]:
    for name in sys.argv[2:]:
        by_art_set(name)
    sys.exit(0)

stamps, _ = data.list_stamps(data.stamps_root())
parts = data.split_stamps(stamps, 1337)
test = parts["test"]
svg, _ = svg_stamps.svg_stamps()
svg = svg_stamps.training_svg_stamps(svg, parts)
emo = [r.to_stamp() for r in emoji.emoji_records()]
gal = {"tux": parts["train"], "svg": svg, "emoji": emo}

def variants(h): return {h, h + "s", h + "es", h.removesuffix("s"), h.removesuffix("es")}

for name in sys.argv[1:]:
    bb = get_backbone(name); S = bb.image_size
    fn = tf.function(lambda x, bb=bb: bb(x)[1],
                     input_signature=[tf.TensorSpec((None, S, S, 3), tf.float32)])
    def feats(st, seed, fn=fn, S=S):
        cache, out = {}, []
        for i in range(0, len(st), 32):
            ims = [data.compose([s], np.random.default_rng([seed, i + j]), cache, size=S)
                   for j, s in enumerate(st[i:i + 32])]
            out.append(fn(np.stack(ims).astype("float32")).numpy())
        f = np.concatenate(out); return f / np.linalg.norm(f, axis=1, keepdims=True)
    t = time.time()
    ft = np.concatenate([feats(test, 1), feats(test, 2)])  # two composites per test stamp
    th = [s.head for s in test] * 2
    fg = {k: feats(v, 0) for k, v in gal.items()}
    n_img = len(ft) + sum(len(v) for v in gal.values())
    for combo in (["tux"], ["tux", "svg"], ["tux", "svg", "emoji"], ["emoji"]):
        G = np.concatenate([fg[k] for k in combo]); H = [s.head for k in combo for s in gal[k]]
        nn = (ft @ G.T).argmax(1)
        acc = np.mean([bool(variants(th[i]) & {H[j]}) for i, j in enumerate(nn)])
        heads = sorted(set(H)); idx = {h: k for k, h in enumerate(heads)}
        C = np.zeros((len(heads), G.shape[1])); 
        for g, h in zip(G, H): C[idx[h]] += g
        C /= np.linalg.norm(C, axis=1, keepdims=True)
        nc = (ft @ C.T).argmax(1)
        cacc = np.mean([bool(variants(th[i]) & {heads[j]}) for i, j in enumerate(nc)])
        print(f"{bb.name}: gallery {'+'.join(combo)} ({len(G)} drawings, {len(heads)} head nouns): held-out singles head-noun accuracy 1-NN {acc:.3f}, nearest class mean {cacc:.3f} ({len(ft)} pictures)")
    print(f"{bb.name}: {n_img} pictures in {time.time() - t:.0f} s")
