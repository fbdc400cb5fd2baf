"""Plain-Python greedy and beam search, written independently of rnnkit.samplers.

The sampler tests and each app's decoding tests compare the in-graph decoders with these
on the same weights. ``step(token, h) -> (log_probs, h_next, attention)`` is one decoder
step in numpy.
"""

from __future__ import annotations

import numpy as np


def length_penalty(n: int, alpha: float) -> float:
    """GNMT length normalisation, as rnnkit.samplers uses it."""
    return ((5.0 + n) / 6.0) ** alpha


def _blocked(lp, previous):
    """lp with the previously emitted token made impossible (None: nothing emitted yet)."""
    if previous is None:
        return lp
    lp = lp.copy()
    lp[previous] = -1e9
    return lp


def ref_greedy(step, h0, max_len: int, start: int, end: int, block_repeats: bool = False):
    """Arg-max decoding: returns (tokens without the end token, summed log-probability)."""
    h, tok, out, total = h0, start, [], 0.0
    for _ in range(max_len):
        lp, h, _ = step(tok, h)
        if block_repeats:
            lp = _blocked(lp, out[-1] if out else None)
        tok = int(np.argmax(lp))
        total += lp[tok]
        if tok == end:
            break
        out.append(tok)
    return out, total


def ref_beam(step, h0, max_len: int, K: int, alpha: float, start: int, end: int,
             block_repeats: bool = False):
    """Textbook beam search with a finished pool: returns (tokens, score, log-probability)."""
    alive = [(0.0, [], h0, start)]  # (log_prob, tokens, h, last token)
    finished = []  # (score, log_prob, tokens)
    for t in range(max_len):
        cands = []
        for lp_sum, toks, h, last in alive:
            lp, h2, _ = step(last, h)
            if block_repeats:
                lp = _blocked(lp, toks[-1] if toks else None)
            # Only a hypothesis's own 2K best words can enter the 2K best overall.
            for v in np.argsort(-lp, kind="stable")[: 2 * K]:
                cands.append((lp_sum + lp[v], toks + [int(v)], h2, int(v)))
        cands = sorted(cands, key=lambda c: -c[0])[: 2 * K]
        for c in cands:
            if c[3] == end or t + 1 >= max_len:
                toks = c[1][:-1] if c[3] == end else c[1]
                finished.append((c[0] / length_penalty(t + 1, alpha), c[0], toks))
        finished = sorted(finished, key=lambda f: -f[0])[:K]
        alive = [c for c in cands if c[3] != end][:K]
        if t + 1 >= max_len:
            break
        if len(finished) == K and finished[-1][0] >= alive[0][0] / length_penalty(max_len, alpha):
            break
    best = finished[0]
    return best[2], best[0], best[1]
