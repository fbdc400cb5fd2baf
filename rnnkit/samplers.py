"""In-graph sequence decoding shared by the translation and captioning apps.

Both decoders here run entirely inside the TensorFlow graph (``tf.while_loop``), use only
core TensorFlow ops and therefore survive ``tf.saved_model.save`` / TF Serving. They are
model-agnostic: the model supplies a *step function* and the sampler does the search.

The step-function interface
---------------------------
::

    logits, new_state, attention = step_fn(tokens, state, context)

``tokens``
    int32 ``[N]``: the previous token of every hypothesis (the start token on the first
    call). ``N`` is the batch size for greedy search and ``batch * beam_width`` for beam
    search (hypotheses of one example are contiguous: rows ``b*K .. b*K+K-1``).
``state``
    Any nest (tensor, tuple, dict, ...) of tensors whose leading dimension is ``N``: the
    recurrent state carried from step to step (e.g. the decoder's ``h`` and an
    input-feeding attention vector). Beam search reorders it when hypotheses are
    re-ranked, so everything per hypothesis must live here.
``context``
    Any nest of tensors with leading dimension ``N`` that does NOT change during decoding:
    encoder states and their mask for translation, image features for captioning. Beam
    search tiles it once (``tile_for_beam``); it is passed unchanged to every step.
    Use ``()`` when there is none.
Returns
    ``logits`` float ``[N, V]`` (unnormalised; the sampler applies ``log_softmax``),
    ``new_state`` with the same structure and shapes as ``state``, and ``attention``:
    float ``[N, S]`` weights over ``S`` source positions, or ``None`` when the model has
    no attention. The function must be traceable (it is traced twice: once for the first
    step, once inside the loop body).

Outputs (:class:`SamplerOutput`)
--------------------------------
``tokens`` int32 ``[B, T]``: generated tokens WITHOUT the end token, right-padded with
``pad_token``; ``lengths`` int32 ``[B]``: number of tokens before the end token;
``scores`` float32 ``[B]``: the ranking score (total log-probability divided by the
length penalty, see below); ``log_probs`` float32 ``[B]``: total log-probability
(end token included); ``token_log_probs`` float32 ``[B, T]``: log-probability of each
emitted token (position ``lengths[b]`` holds the end token's log-probability when the
hypothesis ended with it, 0 after); ``attention`` float32 ``[B, T, S]`` or ``None``.
``T`` is the number of decoding steps actually taken (at most ``max(max_length)``).

Length normalisation
--------------------
GNMT's penalty (Wu et al., 2016): ``score = log_prob / ((5 + n) / 6) ** length_penalty``
where ``n`` counts the generated tokens including the end token. ``length_penalty=0``
ranks by raw log-probability (which favours short outputs); about 0.6-1.0 is usual.

Blocking immediate repeats
--------------------------
``block_repeats=True`` forbids a hypothesis from emitting the token it emitted on the
previous step ("a wheel wheel"). A decoder that mixes in a copy distribution (the
captioner's ImageNet prior) can keep pointing at the same word after saying it; when the
training text never repeats a word back to back this is a safe, model-agnostic fix. The
start token is never blocked on the first step, and ``end_token`` is never blocked.

Penalising repeats
------------------
:func:`penalise_repeats` wraps a step function so each hypothesis carries how often it
has emitted each word and pays a penalty (or is forbidden) to say a chosen word again:
"move to move" in translation, "a dog next to a dog" in captioning. Unlike
``block_repeats`` it also catches repeats that are not back to back.

Choosing the search
-------------------
:func:`generate` is the one entry point the apps call: ``method="greedy"`` (or a beam
width of 1) runs :func:`greedy_search`, ``method="beam"`` runs :func:`beam_search`. The
special ids default to :mod:`rnnkit.modeling.vocabulary`'s.

Beam search algorithm
---------------------
At every step each example's ``K`` alive hypotheses are expanded over the vocabulary and
the ``2K`` best candidates kept. Candidates ending in ``end_token`` (or reaching the
example's ``max_length``) enter a pool of ``K`` finished hypotheses ranked by the
normalised score; the ``K`` best of the others stay alive. An example stops when its
``max_length`` is reached or when no alive hypothesis can still beat the worst finished
one (the bound uses the largest length penalty possible, so the early stop is exact for
``length_penalty >= 0``). The best finished hypothesis is returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from rnnkit.modeling.vocabulary import END, PAD, START

__all__ = [
    "METHODS",
    "SamplerOutput",
    "StepFn",
    "beam_search",
    "generate",
    "greedy_search",
    "length_penalty_factor",
    "penalise_repeats",
    "tile_for_beam",
]

StepFn = Callable[[tf.Tensor, Any, Any], "tuple[tf.Tensor, Any, tf.Tensor | None]"]

_NEG_INF = -1e9  # a large finite negative: -inf would produce NaN in (-inf) - (-inf)


class SamplerOutput(NamedTuple):
    """What :func:`greedy_search` and :func:`beam_search` return (see module docs)."""

    tokens: tf.Tensor
    lengths: tf.Tensor
    scores: tf.Tensor
    log_probs: tf.Tensor
    token_log_probs: tf.Tensor
    attention: tf.Tensor | None


def length_penalty_factor(num_tokens: tf.Tensor, alpha: float) -> tf.Tensor:
    """GNMT length penalty ``((5 + n) / 6) ** alpha`` as float32.

    Args:
        num_tokens: number of generated tokens, end token included (any int/float shape).
        alpha: the exponent; 0 disables normalisation (factor 1).
    """
    n = tf.cast(num_tokens, tf.float32)
    return tf.pow((5.0 + n) / 6.0, float(alpha))


def tile_for_beam(nest: Any, beam_width: int) -> Any:
    """Repeat every tensor of ``nest`` ``beam_width`` times along axis 0 (``[B,..]->[B*K,..]``).

    Row ``b*K + k`` is a copy of row ``b``, the layout :func:`beam_search` uses.

    Args:
        nest: a nest of tensors with a leading batch dimension (or ``()``).
        beam_width: ``K``.
    """
    return tf.nest.map_structure(lambda x: tf.repeat(x, beam_width, axis=0), nest)


def _batch_size(initial_state: Any, context: Any) -> tf.Tensor:
    flat = tf.nest.flatten(initial_state) + tf.nest.flatten(context)
    if not flat:
        raise ValueError("initial_state and context are both empty: cannot infer the batch size")
    return tf.shape(flat[0])[0]


def _max_lengths(max_length: Any, batch: tf.Tensor) -> tf.Tensor:
    # Scalar or per-example [B]; at least one step so every output has a defined shape.
    ml = tf.cast(tf.convert_to_tensor(max_length), tf.int32)
    ml = tf.broadcast_to(ml, [batch])
    return tf.maximum(ml, 1)


def _write_column(buffer: tf.Tensor, t: tf.Tensor, values: tf.Tensor, axis: int) -> tf.Tensor:
    """Return ``buffer`` with position ``t`` of time axis ``axis`` replaced by ``values``."""
    width = tf.shape(buffer)[axis]
    hit = tf.equal(tf.range(width), t)
    shape = [1] * len(buffer.shape)
    shape[axis] = -1
    hit = tf.reshape(hit, shape)
    return tf.where(hit, tf.expand_dims(values, axis), buffer)


def _block_previous(log_probs: tf.Tensor, previous: tf.Tensor, end_token: int) -> tf.Tensor:
    """``log_probs`` [N, V] with each row's ``previous`` token (int32 [N]) set to -1e9.

    A previous token of -1 (the first step) or ``end_token`` blocks nothing.
    """
    vocab = tf.shape(log_probs)[-1]
    blocked = tf.logical_and(tf.not_equal(previous, end_token), previous >= 0)
    hit = tf.logical_and(tf.equal(tf.range(vocab)[None, :], previous[:, None]), blocked[:, None])
    return tf.where(hit, tf.constant(_NEG_INF, log_probs.dtype), log_probs)


def _call_step(step_fn: StepFn, tokens, state, context):
    out = step_fn(tokens, state, context)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise TypeError("step_fn must return (logits, new_state, attention_or_None)")
    logits, new_state, attention = out
    logits = tf.cast(logits, tf.float32)
    if attention is not None:
        attention = tf.cast(attention, tf.float32)
    return logits, new_state, attention


def penalise_repeats(step_fn: StepFn, penalised: Any, penalty: float, start_token: int,
                     groups: Any = None) -> StepFn:
    """Wrap ``step_fn`` so a hypothesis pays ``penalty`` per earlier emission of a word.

    The wrapped step's state is ``(state, counts)``: ``counts`` float ``[N, G + E]`` holds
    how often each *group* of ids has been emitted (beam search reorders it with the
    hypotheses, so each hypothesis has its own). Ids ``0..V-1`` belong to ``groups`` (for
    instance one group per lower-cased word, so "Default" after "default" is a repeat);
    ids from ``V`` on (a copy mechanism's extended ids, ``E`` of them) are each a group of
    their own and always penalised. Start the search from
    ``wrapped.initial_state(state0, E)``, i.e. ``(state0, zeros([B, G + E]))``; without
    groups ``G = V``.

    Args:
        step_fn: the model's step function (module docs); its logits may be wider than
            ``V`` (extended ids).
        penalised: ``[V]`` 0/1 (float or bool): the ids the penalty applies to.
        penalty: subtracted from an id's log-probability per earlier emission of its group
            (>= 0; ``inf`` forbids any repeat).
        start_token: the id fed on the first step (never counted).
        groups: ``[V]`` int group of each id, ``0..G-1`` (default: each id its own).

    Raises:
        ValueError: for a negative penalty or groups of another length than ``penalised``.
    """
    if penalty < 0:
        raise ValueError(f"penalty must be >= 0, got {penalty}")
    penalised = np.asarray(penalised, np.float32)
    vocab = penalised.shape[0]
    groups = np.arange(vocab) if groups is None else np.asarray(groups, np.int32)
    if groups.shape != (vocab,):
        raise ValueError(f"groups has {groups.shape[0]} entries, penalised {vocab}")
    num_groups = int(groups.max()) + 1 if vocab else 0
    # Built here, outside any tf.function the wrapper may be traced in.
    mask = tf.constant(penalised)
    group_ids = tf.constant(groups, tf.int32)
    forbid = penalty == float("inf")

    def wrapped(tokens, state, context):
        inner, counts = state
        extra = tf.shape(counts)[1] - num_groups
        ext_groups = tf.concat([group_ids, num_groups + tf.range(extra)], axis=0)
        ext_mask = tf.concat([mask, tf.ones([extra], mask.dtype)], axis=0)
        emitted = tf.one_hot(tf.gather(ext_groups, tokens), tf.shape(counts)[1],
                             dtype=counts.dtype)
        counts = counts + emitted * tf.cast(tokens != start_token, counts.dtype)[:, None]
        logits, inner, attention = _call_step(step_fn, tokens, inner, context)
        repeats = tf.gather(counts, ext_groups, axis=1) * tf.cast(ext_mask, counts.dtype)[None]
        repeats = repeats[:, : tf.shape(logits)[1]]
        if forbid:
            logits = tf.where(repeats > 0, tf.constant(_NEG_INF, logits.dtype), logits)
        else:
            logits = logits - penalty * repeats
        return logits, (inner, counts), attention

    def initial_state(state0: Any, extra: Any = 0) -> tuple:
        """``(state0, zeros [B, G + extra])``: the wrapped step's first state."""
        batch = tf.shape(tf.nest.flatten(state0)[0])[0]
        return state0, tf.zeros(tf.stack([batch, num_groups + extra]), tf.float32)

    wrapped.initial_state = initial_state
    return wrapped


def greedy_search(
    step_fn: StepFn,
    initial_state: Any,
    context: Any = (),
    *,
    start_token: int,
    end_token: int,
    max_length: Any,
    pad_token: int = 0,
    length_penalty: float = 0.0,
    block_repeats: bool = False,
) -> SamplerOutput:
    """Greedy (arg-max) decoding inside the graph.

    Args:
        step_fn: the model's step function (interface in the module docstring).
        initial_state: nest of ``[B, ...]`` tensors, the decoder state before the first step.
        context: nest of ``[B, ...]`` constant tensors passed to every step (or ``()``).
        start_token: id fed on the first step.
        end_token: id that finishes a hypothesis (not included in ``tokens``).
        max_length: int or int tensor, scalar or ``[B]``: the most tokens generated per
            example (end token included); values below 1 are raised to 1.
        pad_token: id written after the end of each sequence.
        length_penalty: alpha of the GNMT penalty used for ``scores`` only (greedy choices
            do not depend on it).
        block_repeats: never emit the token emitted on the previous step (module docs).

    Returns:
        :class:`SamplerOutput` (``attention`` is ``None`` when ``step_fn`` returns none).
    """
    batch = _batch_size(initial_state, context)
    max_len = _max_lengths(max_length, batch)
    t_max = tf.reduce_max(tf.concat([max_len, [1]], 0))

    tokens0 = tf.fill([batch], tf.constant(start_token, tf.int32))
    logits, state, att = _call_step(step_fn, tokens0, initial_state, context)
    has_att = att is not None
    src_len = tf.shape(att)[1] if has_att else 0

    seq = tf.fill([batch, t_max], tf.constant(pad_token, tf.int32))
    tok_lp = tf.zeros([batch, t_max], tf.float32)
    att_buf = tf.zeros([batch, t_max, src_len], tf.float32) if has_att else tf.zeros([0])
    finished = tf.zeros([batch], tf.bool)
    lengths = tf.zeros([batch], tf.int32)
    steps = tf.zeros([batch], tf.int32)
    total = tf.zeros([batch], tf.float32)

    def advance(t, prev, logits, att, seq, tok_lp, att_buf, finished, lengths, steps, total):
        lp = tf.nn.log_softmax(logits, axis=-1)
        if block_repeats:
            lp = _block_previous(lp, prev, end_token)
        tok = tf.argmax(lp, axis=-1, output_type=tf.int32)
        best = tf.reduce_max(lp, axis=-1)
        active = tf.logical_and(tf.logical_not(finished), t < max_len)
        is_end = tf.equal(tok, end_token)
        emit = tf.where(tf.logical_and(active, tf.logical_not(is_end)), tok, pad_token)
        seq = _write_column(seq, t, emit, axis=1)
        tok_lp = _write_column(tok_lp, t, tf.where(active, best, 0.0), axis=1)
        if has_att:
            att_buf = _write_column(att_buf, t, att * tf.cast(active, tf.float32)[:, None], 1)
        total = total + tf.where(active, best, 0.0)
        lengths = lengths + tf.cast(tf.logical_and(active, tf.logical_not(is_end)), tf.int32)
        steps = steps + tf.cast(active, tf.int32)
        finished = tf.logical_or(finished, tf.logical_and(active, tf.logical_or(is_end, t + 1 >= max_len)))
        # The fed-back token for finished rows is irrelevant; feed pad to keep ids valid.
        next_tok = tf.where(finished, pad_token, tok)
        return next_tok, seq, tok_lp, att_buf, finished, lengths, steps, total

    next_tok, seq, tok_lp, att_buf, finished, lengths, steps, total = advance(
        tf.constant(0), tf.fill([batch], -1), logits, att, seq, tok_lp, att_buf, finished,
        lengths, steps, total
    )

    def cond(t, next_tok, state, seq, tok_lp, att_buf, finished, lengths, steps, total):
        return tf.logical_and(t < t_max, tf.logical_not(tf.reduce_all(finished)))

    def body(t, next_tok, state, seq, tok_lp, att_buf, finished, lengths, steps, total):
        logits, new_state, att = _call_step(step_fn, next_tok, state, context)
        outs = advance(t, next_tok, logits, att, seq, tok_lp, att_buf, finished, lengths, steps,
                       total)
        next_tok, seq, tok_lp, att_buf, finished, lengths, steps, total = outs
        return t + 1, next_tok, new_state, seq, tok_lp, att_buf, finished, lengths, steps, total

    loop_vars = (tf.constant(1), next_tok, state, seq, tok_lp, att_buf, finished, lengths, steps, total)
    _, _, _, seq, tok_lp, att_buf, finished, lengths, steps, total = tf.while_loop(
        cond, body, loop_vars, shape_invariants=_invariants(loop_vars)
    )
    width = tf.reduce_max(tf.concat([steps, [0]], 0))
    scores = total / length_penalty_factor(steps, length_penalty)
    return SamplerOutput(
        tokens=seq[:, :width],
        lengths=lengths,
        scores=scores,
        log_probs=total,
        token_log_probs=tok_lp[:, :width],
        attention=att_buf[:, :width] if has_att else None,
    )


def _invariants(loop_vars):
    # Batch, time and source dimensions are dynamic; keep only the rank fixed.
    def relax(x):
        x = tf.convert_to_tensor(x)
        if x.shape.rank is None or x.shape.rank == 0:
            return x.shape
        return tf.TensorShape([None] * x.shape.rank)

    return tf.nest.map_structure(relax, loop_vars)


def beam_search(
    step_fn: StepFn,
    initial_state: Any,
    context: Any = (),
    *,
    start_token: int,
    end_token: int,
    max_length: Any,
    beam_width: int = 4,
    length_penalty: float = 0.6,
    pad_token: int = 0,
    block_repeats: bool = False,
) -> SamplerOutput:
    """Beam search inside the graph, with GNMT length normalisation (see module docs).

    Args:
        step_fn: the model's step function (interface in the module docstring); it is
            called on ``B * beam_width`` rows.
        initial_state: nest of ``[B, ...]`` tensors (untiled: the sampler tiles it).
        context: nest of ``[B, ...]`` constant tensors (untiled), or ``()``.
        start_token: id fed on the first step.
        end_token: id that finishes a hypothesis (not included in ``tokens``).
        max_length: int or int tensor, scalar or ``[B]``: the most tokens per example
            (end token included); values below 1 are raised to 1.
        beam_width: ``K``, the number of hypotheses kept per example (``K=1`` is greedy
            search, apart from the ranking of finished hypotheses).
        length_penalty: alpha of the GNMT penalty ``((5+n)/6)**alpha`` used to rank finished
            hypotheses; must be >= 0.
        pad_token: id written after the end of each sequence.
        block_repeats: no hypothesis emits the token it emitted on the previous step
            (module docs).

    Returns:
        :class:`SamplerOutput` for the best hypothesis of each example.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    if length_penalty < 0:
        raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
    K = int(beam_width)
    batch = _batch_size(initial_state, context)
    max_len = _max_lengths(max_length, batch)
    t_max = tf.reduce_max(tf.concat([max_len, [1]], 0))

    state = tile_for_beam(initial_state, K)
    context = tile_for_beam(context, K)
    tokens0 = tf.fill([batch * K], tf.constant(start_token, tf.int32))
    logits, state, att = _call_step(step_fn, tokens0, state, context)
    has_att = att is not None
    src_len = tf.shape(att)[1] if has_att else 0

    # Only beam 0 is live at the start: the K copies are identical and must not be
    # expanded K times.
    alive_lp = tf.tile(tf.constant([[0.0] + [_NEG_INF] * (K - 1)], tf.float32), [batch, 1])
    alive_seq = tf.fill([batch, K, t_max], tf.constant(pad_token, tf.int32))
    alive_tlp = tf.zeros([batch, K, t_max], tf.float32)
    alive_att = tf.zeros([batch, K, t_max, src_len], tf.float32) if has_att else tf.zeros([0])
    fin_seq = tf.fill([batch, K, t_max], tf.constant(pad_token, tf.int32))
    fin_tlp = tf.zeros([batch, K, t_max], tf.float32)
    fin_att = tf.zeros([batch, K, t_max, src_len], tf.float32) if has_att else tf.zeros([0])
    fin_score = tf.fill([batch, K], tf.constant(_NEG_INF, tf.float32))
    fin_lp = tf.zeros([batch, K], tf.float32)
    fin_len = tf.zeros([batch, K], tf.int32)
    fin_steps = tf.zeros([batch, K], tf.int32)
    done = tf.zeros([batch], tf.bool)
    max_factor = length_penalty_factor(max_len, length_penalty)

    def gather_beams(x, idx):
        return tf.gather(x, idx, batch_dims=1)

    def advance(t, prev, logits, new_state, att, alive):
        (alive_lp, alive_seq, alive_tlp, alive_att,
         fin_seq, fin_tlp, fin_att, fin_score, fin_lp, fin_len, fin_steps, done) = alive
        vocab = tf.shape(logits)[-1]
        lp = tf.nn.log_softmax(logits, axis=-1)
        if block_repeats:
            lp = _block_previous(lp, prev, end_token)
        lp = tf.reshape(lp, [batch, K, vocab])
        cand = tf.reshape(alive_lp[:, :, None] + lp, [batch, K * vocab])
        c_score, c_idx = tf.math.top_k(cand, k=2 * K)
        c_beam = c_idx // vocab
        c_tok = c_idx % vocab
        c_tok_lp = tf.gather(tf.reshape(lp, [batch, K * vocab]), c_idx, batch_dims=1)
        c_seq = _write_column(gather_beams(alive_seq, c_beam), t, c_tok, axis=2)
        c_tlp = _write_column(gather_beams(alive_tlp, c_beam), t, c_tok_lp, axis=2)
        if has_att:
            att_b = tf.reshape(att, [batch, K, src_len])
            c_att = _write_column(gather_beams(alive_att, c_beam), t, gather_beams(att_b, c_beam), 2)
        is_end = tf.equal(c_tok, end_token)
        active = tf.logical_and(t < max_len, tf.logical_not(done))[:, None]
        at_limit = (t + 1 >= max_len)[:, None]
        c_fin = tf.logical_and(tf.logical_or(is_end, at_limit), active)
        # A candidate that did not really exist (expanded from a -1e9 beam) never finishes.
        c_fin = tf.logical_and(c_fin, c_score > _NEG_INF / 2)
        factor = length_penalty_factor(t + 1, length_penalty)
        c_fin_score = tf.where(c_fin, c_score / factor, _NEG_INF)
        # End tokens (written as pad) are not part of the visible sequence.
        c_seq_vis = _write_column(c_seq, t, tf.where(is_end, pad_token, c_tok), axis=2)

        # Finished pool: K best of (old pool, new finished candidates).
        all_score = tf.concat([fin_score, c_fin_score], 1)
        f_score, f_idx = tf.math.top_k(all_score, k=K)
        fin_seq = gather_beams(tf.concat([fin_seq, c_seq_vis], 1), f_idx)
        fin_tlp = gather_beams(tf.concat([fin_tlp, c_tlp], 1), f_idx)
        if has_att:
            fin_att = gather_beams(tf.concat([fin_att, c_att], 1), f_idx)
        fin_lp = gather_beams(tf.concat([fin_lp, c_score], 1), f_idx)
        c_len = tf.fill(tf.shape(c_tok), t) + tf.cast(tf.logical_not(is_end), tf.int32)
        fin_len = gather_beams(tf.concat([fin_len, c_len], 1), f_idx)
        fin_steps = gather_beams(tf.concat([fin_steps, tf.fill(tf.shape(c_tok), t + 1)], 1), f_idx)
        fin_score = f_score

        # Alive: K best candidates that did not end.
        a_score, a_idx = tf.math.top_k(tf.where(is_end, _NEG_INF, c_score), k=K)
        alive_seq = gather_beams(c_seq, a_idx)
        alive_tlp = gather_beams(c_tlp, a_idx)
        if has_att:
            alive_att = gather_beams(c_att, a_idx)
        src_beam = gather_beams(c_beam, a_idx)  # [B, K] index of the parent beam
        flat = tf.reshape(src_beam + tf.range(batch)[:, None] * K, [-1])
        new_state = tf.nest.map_structure(lambda s: tf.gather(s, flat), new_state)
        next_tok = tf.reshape(gather_beams(c_tok, a_idx), [-1])
        alive_lp = a_score

        # Exact early stop: the best alive log-prob can only fall, and the largest
        # denominator it can still get is the penalty at max_length.
        best_possible = alive_lp[:, 0] / max_factor
        hopeless = fin_score[:, K - 1] >= best_possible
        done = tf.logical_or(done, tf.logical_or(t + 1 >= max_len, hopeless))
        alive = (alive_lp, alive_seq, alive_tlp, alive_att,
                 fin_seq, fin_tlp, fin_att, fin_score, fin_lp, fin_len, fin_steps, done)
        return next_tok, new_state, alive

    alive0 = (alive_lp, alive_seq, alive_tlp, alive_att,
              fin_seq, fin_tlp, fin_att, fin_score, fin_lp, fin_len, fin_steps, done)
    next_tok, state, alive = advance(tf.constant(0), tf.fill([batch * K], -1), logits, state,
                                     att, alive0)

    def cond(t, next_tok, state, alive):
        return tf.logical_and(t < t_max, tf.logical_not(tf.reduce_all(alive[-1])))

    def body(t, next_tok, state, alive):
        logits, new_state, att = _call_step(step_fn, next_tok, state, context)
        next_tok, new_state, alive = advance(t, next_tok, logits, new_state, att, alive)
        return t + 1, next_tok, new_state, alive

    loop_vars = (tf.constant(1), next_tok, state, alive)
    _, _, _, alive = tf.while_loop(cond, body, loop_vars, shape_invariants=_invariants(loop_vars))
    (_, _, _, _, fin_seq, fin_tlp, fin_att, fin_score, fin_lp, fin_len, fin_steps, _) = alive

    # top_k keeps the pool sorted, so hypothesis 0 is the best.
    steps = fin_steps[:, 0]
    width = tf.reduce_max(tf.concat([steps, [0]], 0))
    return SamplerOutput(
        tokens=fin_seq[:, 0, :width],
        lengths=fin_len[:, 0],
        scores=fin_score[:, 0],
        log_probs=fin_lp[:, 0],
        token_log_probs=fin_tlp[:, 0, :width],
        attention=fin_att[:, 0, :width] if has_att else None,
    )


#: The decoding methods :func:`generate` accepts.
METHODS = ("greedy", "beam")


def generate(
    step_fn: StepFn,
    initial_state: Any,
    context: Any = (),
    *,
    max_length: Any,
    method: str = "beam",
    beam_width: int = 4,
    length_penalty: float = 0.6,
    block_repeats: bool = False,
    start_token: int | None = None,
    end_token: int | None = None,
    pad_token: int | None = None,
) -> SamplerOutput:
    """Decode with greedy or beam search: the one place where the choice is made.

    Args:
        step_fn: the model's step function (interface in the module docstring).
        initial_state: nest of ``[B, ...]`` tensors, the decoder state before the first step.
        context: nest of ``[B, ...]`` constant tensors passed to every step (or ``()``).
        max_length: int or int tensor, scalar or ``[B]``: the most tokens per example
            (end token included).
        method: ``"greedy"`` or ``"beam"``.
        beam_width: hypotheses kept per example by beam search; 1 means greedy search
            (a width-1 beam would only re-rank finished hypotheses differently).
        length_penalty: GNMT alpha ranking beam hypotheses (greedy choices do not depend
            on it, and greedy ``scores`` are raw log-probabilities).
        block_repeats: never emit the token emitted on the previous step (module docs).
        start_token: id fed on the first step (default ``rnnkit.modeling.vocabulary.START``).
        end_token: id that finishes a sequence (default ``END``).
        pad_token: id written after the end (default ``PAD``).

    Returns:
        :class:`SamplerOutput`.

    Raises:
        ValueError: for an unknown ``method`` or a beam width below 1.
    """
    if method not in METHODS:
        raise ValueError(f"decoding method must be one of {METHODS}, got {method!r}")
    if int(beam_width) < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    kwargs = {
        "start_token": START if start_token is None else start_token,
        "end_token": END if end_token is None else end_token,
        "pad_token": PAD if pad_token is None else pad_token,
        "max_length": max_length,
        "block_repeats": block_repeats,
    }
    if method == "greedy" or int(beam_width) == 1:
        return greedy_search(step_fn, initial_state, context, **kwargs)
    return beam_search(step_fn, initial_state, context, beam_width=int(beam_width),
                       length_penalty=length_penalty, **kwargs)
