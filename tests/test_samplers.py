"""rnnkit.samplers against a plain Python/numpy reference decoder on a tiny fixed model.

The step function is a deterministic toy recurrent decoder with attention over a context
(random but seeded weights), so the in-graph greedy and beam searches can be compared
token for token and score for score with a straightforward per-example implementation.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from reference_decoders import ref_beam, ref_greedy

from rnnkit import samplers

V, H, S, D = 9, 6, 4, 6
START, END, PAD = 1, 2, 0


def make_weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {
        "E": rng.normal(0, 1.0, (V, H)),
        "W": rng.normal(0, 0.7, (H, H)),
        "U": rng.normal(0, 0.7, (H, H)),
        "O": rng.normal(0, 1.5, (H + D, V)),
        "b": rng.normal(0, 0.5, (V,)),
    }
    # Make the end token moderately likely so hypotheses end at different lengths.
    w["b"][END] += 1.0
    return {k: v.astype(np.float32) for k, v in w.items()}


def tf_step(w):
    E, W, U, O, b = (tf.constant(w[k]) for k in "EWUOb")

    def step(tokens, state, context):
        h = tf.tanh(tf.gather(E, tokens) @ W + state["h"] @ U)
        mem, mask = context
        e = tf.einsum("nd,nsd->ns", h, mem)
        e = tf.where(mask, e, -1e9)
        a = tf.nn.softmax(e, axis=-1)
        ctx = tf.einsum("ns,nsd->nd", a, mem)
        logits = tf.concat([h, ctx], -1) @ O + b
        return logits, {"h": h}, a

    return step


def np_step(w, token, h, mem, mask):
    """One step for ONE hypothesis: returns (log_probs [V], h, attention [S])."""
    h = np.tanh(w["E"][token] @ w["W"] + h @ w["U"])
    e = np.where(mask, mem @ h, -1e9)
    a = np.exp(e - e.max())
    a /= a.sum()
    ctx = a @ mem
    logits = np.concatenate([h, ctx]) @ w["O"] + w["b"]
    lp = logits - logits.max()
    lp = lp - np.log(np.exp(lp).sum())
    return lp, h, a


def random_batch(seed: int, batch: int = 6):
    rng = np.random.default_rng(seed + 100)
    h0 = rng.normal(0, 1, (batch, H)).astype(np.float32)
    mem = rng.normal(0, 1, (batch, S, D)).astype(np.float32)
    lens = rng.integers(1, S + 1, batch)
    mask = np.arange(S)[None, :] < lens[:, None]
    max_len = rng.integers(1, 12, batch).astype(np.int32)
    return h0, mem, mask, max_len


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_reference(seed):
    w = make_weights(seed)
    h0, mem, mask, max_len = random_batch(seed)
    out = samplers.greedy_search(
        tf_step(w), {"h": tf.constant(h0)}, (tf.constant(mem), tf.constant(mask)),
        start_token=START, end_token=END, max_length=tf.constant(max_len), pad_token=PAD,
    )
    for i in range(len(h0)):
        step = lambda tok, h, i=i: np_step(w, tok, h, mem[i], mask[i])
        toks, total = ref_greedy(step, h0[i], int(max_len[i]), START, END)
        n = int(out.lengths[i])
        assert out.tokens[i, :n].numpy().tolist() == toks
        assert np.all(out.tokens[i, n:].numpy() == PAD)
        assert out.log_probs[i].numpy() == pytest.approx(total, abs=1e-4)
        assert out.token_log_probs[i].numpy().sum() == pytest.approx(total, abs=1e-4)
    att = out.attention.numpy()
    assert att.shape[:2] == out.tokens.shape
    # Attention rows are distributions over the unmasked source positions.
    steps = out.lengths.numpy()
    for i in range(len(h0)):
        assert np.allclose(att[i, : steps[i]].sum(-1), 1.0, atol=1e-5)
        assert np.all(att[i, :, ~mask[i]] < 1e-6)


@pytest.mark.parametrize("seed,K,alpha", [(0, 1, 0.0), (1, 3, 0.6), (2, 4, 1.0), (3, 5, 0.0), (4, 2, 0.6)])
def test_beam_matches_reference(seed, K, alpha):
    w = make_weights(seed)
    h0, mem, mask, max_len = random_batch(seed, batch=5)
    out = samplers.beam_search(
        tf_step(w), {"h": tf.constant(h0)}, (tf.constant(mem), tf.constant(mask)),
        start_token=START, end_token=END, max_length=tf.constant(max_len),
        beam_width=K, length_penalty=alpha, pad_token=PAD,
    )
    for i in range(len(h0)):
        step = lambda tok, h, i=i: np_step(w, tok, h, mem[i], mask[i])
        toks, score, total = ref_beam(step, h0[i], int(max_len[i]), K, alpha, START, END)
        n = int(out.lengths[i])
        assert out.tokens[i, :n].numpy().tolist() == toks, f"example {i}"
        assert out.scores[i].numpy() == pytest.approx(score, abs=1e-4)
        assert out.log_probs[i].numpy() == pytest.approx(total, abs=1e-4)
        assert out.token_log_probs[i].numpy().sum() == pytest.approx(total, abs=1e-4)


def _has_repeat(tokens) -> bool:
    return any(a == b for a, b in zip(tokens, tokens[1:]))


@pytest.mark.parametrize("K", [1, 3])
def test_block_repeats_matches_reference_and_never_repeats(K):
    """With block_repeats no output has a token twice in a row, and greedy/beam still equal
    the reference decoders (which drop the previous token from each step's choices)."""
    repeated_without = 0
    for seed in range(6):
        w = make_weights(seed)
        # The toy decoder repeats itself readily when its own token is favoured.
        w["E"] *= 3.0
        h0, mem, mask, _ = random_batch(seed, batch=6)
        args = (tf_step(w), {"h": tf.constant(h0)}, (tf.constant(mem), tf.constant(mask)))
        kw = dict(start_token=START, end_token=END, max_length=11, pad_token=PAD)
        if K == 1:
            plain = samplers.greedy_search(*args, **kw)
            out = samplers.greedy_search(*args, block_repeats=True, **kw)
        else:
            plain = samplers.beam_search(*args, beam_width=K, length_penalty=0.6, **kw)
            out = samplers.beam_search(*args, beam_width=K, length_penalty=0.6,
                                       block_repeats=True, **kw)
        for i in range(len(h0)):
            step = lambda tok, h, i=i: np_step(w, tok, h, mem[i], mask[i])
            if K == 1:
                toks, total = ref_greedy(step, h0[i], 11, START, END, block_repeats=True)
            else:
                toks, _, total = ref_beam(step, h0[i], 11, K, 0.6, START, END, block_repeats=True)
            got = out.tokens[i, : int(out.lengths[i])].numpy().tolist()
            assert got == toks, f"seed {seed} example {i}"
            assert out.log_probs[i].numpy() == pytest.approx(total, abs=1e-4)
            assert not _has_repeat(got)
            repeated_without += _has_repeat(
                plain.tokens[i, : int(plain.lengths[i])].numpy().tolist())
    # Otherwise the test would pass without blocking anything.
    assert repeated_without > 0


def test_beam_never_worse_than_greedy_in_score():
    w = make_weights(7)
    h0, mem, mask, _ = random_batch(7, batch=8)
    args = (tf_step(w), {"h": tf.constant(h0)}, (tf.constant(mem), tf.constant(mask)))
    kw = dict(start_token=START, end_token=END, max_length=10, pad_token=PAD)
    g = samplers.greedy_search(*args, **kw)
    b = samplers.beam_search(*args, beam_width=6, length_penalty=0.0, **kw)
    assert np.all(b.log_probs.numpy() >= g.log_probs.numpy() - 1e-5)


def test_no_attention_and_state_only_model():
    """Captioning-style use: context is () and step_fn returns no attention."""
    w = make_weights(3)
    E, W, U, O = (tf.constant(w[k]) for k in "EWUO")

    def step(tokens, h, context):
        h = tf.tanh(tf.gather(E, tokens) @ W + h @ U)
        return h @ O[:H], h, None

    h0 = tf.random.stateless_normal([3, H], seed=[1, 2])
    for out in (
        samplers.greedy_search(step, h0, start_token=START, end_token=END, max_length=5),
        samplers.beam_search(step, h0, start_token=START, end_token=END, max_length=5, beam_width=3),
    ):
        assert out.attention is None
        assert out.tokens.shape[0] == 3 and out.tokens.shape[1] <= 5


def test_inside_tf_function_with_dynamic_batch_and_empty_batch():
    w = make_weights(5)
    step = tf_step(w)

    @tf.function(input_signature=[
        tf.TensorSpec([None, H]), tf.TensorSpec([None, None, D]), tf.TensorSpec([None, None], tf.bool),
    ])
    def decode(h0, mem, mask):
        max_len = 2 * tf.reduce_sum(tf.cast(mask, tf.int32), 1) + 1
        out = samplers.beam_search(step, {"h": h0}, (mem, mask), start_token=START,
                                   end_token=END, max_length=max_len, beam_width=3)
        return out.tokens, out.scores, out.attention

    h0, mem, mask, _ = random_batch(5, batch=4)
    toks, scores, att = decode(h0, mem, mask)
    assert toks.shape[0] == 4 and att.shape[0] == 4 and att.shape[2] == S
    toks, scores, att = decode(np.zeros([0, H], np.float32), np.zeros([0, 3, D], np.float32),
                               np.zeros([0, 3], bool))
    assert toks.shape[0] == 0 and scores.shape == (0,)


def test_bad_arguments():
    with pytest.raises(ValueError, match="beam_width"):
        samplers.beam_search(lambda *a: None, tf.zeros([1, 2]), start_token=1, end_token=2,
                             max_length=3, beam_width=0)
    with pytest.raises(TypeError, match="step_fn must return"):
        samplers.greedy_search(lambda t, s, c: (s,), tf.zeros([1, 2]), start_token=1,
                               end_token=2, max_length=3)


def test_saved_model_roundtrip_without_rnnkit(tmp_path):
    """Decoding graphs export and run where rnnkit cannot be imported (blocked)."""
    w = make_weights(11)
    step = tf_step(w)

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, H]), tf.TensorSpec([None, S, D]),
                                      tf.TensorSpec([None, S], tf.bool)])
        def decode(self, h0, mem, mask):
            out = samplers.beam_search(step, {"h": h0}, (mem, mask), start_token=START,
                                       end_token=END, max_length=8, beam_width=3)
            return {"tokens": out.tokens, "scores": out.scores}

    m = M()
    h0, mem, mask, _ = random_batch(11, batch=3)
    want = m.decode(h0, mem, mask)
    tf.saved_model.save(m, str(tmp_path / "m"))
    np.savez(tmp_path / "in.npz", h0=h0, mem=mem, mask=mask)
    code = (
        # The editable install makes rnnkit findable everywhere; block it explicitly.
        "import sys; sys.modules['rnnkit'] = None\n"
        "import numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({str(tmp_path / 'm')!r})\n"
        f"d = np.load({str(tmp_path / 'in.npz')!r})\n"
        "o = m.decode(d['h0'], d['mem'], d['mask'])\n"
        "print(o['tokens'].numpy().tolist()); print(o['scores'].numpy().tolist())\n"
    )
    res = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert eval(lines[-2]) == want["tokens"].numpy().tolist()
    assert np.allclose(eval(lines[-1]), want["scores"].numpy(), atol=1e-5)


def test_length_penalty_factor():
    assert float(samplers.length_penalty_factor(1, 1.0)) == pytest.approx(1.0)
    assert float(samplers.length_penalty_factor(7, 0.6)) == pytest.approx(math.pow(2.0, 0.6))


# --------------------------------------------------------------------------- generate


def test_generate_chooses_greedy_or_beam_with_the_shared_special_ids():
    """``generate`` is greedy search for method "greedy" or a width-1 beam, beam search
    otherwise, and its default special ids are the vocabulary's (0 pad, 1 start, 2 end)."""
    w = make_weights(3)
    h0, mem, mask, max_len = random_batch(3)
    step = tf_step(w)
    state, context = {"h": tf.constant(h0)}, (tf.constant(mem), tf.constant(mask))
    ids = {"start_token": START, "end_token": END, "pad_token": PAD}
    greedy = samplers.greedy_search(step, state, context, max_length=max_len, **ids)
    beam = samplers.beam_search(step, state, context, max_length=max_len, beam_width=3,
                                length_penalty=0.6, **ids)
    by_method = samplers.generate(step, state, context, max_length=max_len, method="greedy")
    by_width = samplers.generate(step, state, context, max_length=max_len, beam_width=1)
    by_beam = samplers.generate(step, state, context, max_length=max_len, beam_width=3,
                                length_penalty=0.6)
    for out in (by_method, by_width):
        np.testing.assert_array_equal(out.tokens.numpy(), greedy.tokens.numpy())
        np.testing.assert_allclose(out.scores.numpy(), greedy.scores.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(by_beam.tokens.numpy(), beam.tokens.numpy())
    np.testing.assert_allclose(by_beam.scores.numpy(), beam.scores.numpy(), rtol=1e-6)
    for b in range(len(h0)):
        ref_step = lambda tok, h, b=b: np_step(w, tok, h, mem[b], mask[b])
        toks, _ = ref_greedy(ref_step, h0[b], int(max_len[b]), START, END)
        n = int(by_method.lengths[b])
        assert by_method.tokens[b, :n].numpy().tolist() == toks


def test_generate_rejects_an_unknown_method_or_width():
    step = tf_step(make_weights(0))
    h0, mem, mask, _ = random_batch(0, batch=2)
    args = (step, {"h": tf.constant(h0)}, (tf.constant(mem), tf.constant(mask)))
    with pytest.raises(ValueError, match="decoding method"):
        samplers.generate(*args, max_length=5, method="sampling")
    with pytest.raises(ValueError, match="beam_width"):
        samplers.generate(*args, max_length=5, beam_width=0)


def test_penalise_repeats_forbids_or_penalises_a_word_said_before():
    """A step that always prefers id 4 then the end token: wrapped with an infinite
    penalty it says 4 once; a group makes id 5 ("the same word") a repeat of 4; ids past
    the vocabulary (copy ids) are always penalised."""
    vocab = 6
    prefs = np.full(vocab + 2, -9.0, np.float32)
    prefs[4], prefs[5], prefs[END] = -0.1, -0.5, -3.0

    def step(tokens, h, context):
        n = tf.shape(tokens)[0]
        return tf.tile(tf.constant(prefs)[None], [n, 1]), h, None

    penalised = np.array([0, 0, 0, 0, 1, 1], np.float32)
    h0 = tf.zeros([1, 2])
    runs = {}
    for name, groups, width in (("own", None, 6), ("grouped", [0, 1, 2, 3, 4, 4], 5)):
        fn = samplers.penalise_repeats(step, penalised, float("inf"), START, groups=groups)
        state = fn.initial_state(h0, 2)
        assert state[1].shape == (1, width + 2)
        out = samplers.generate(fn, state, (), beam_width=3, max_length=6)
        runs[name] = out.tokens[0, : out.lengths[0]].numpy().tolist()
    assert runs["own"] == [4, 5] and runs["grouped"] == [4]
    # A finite penalty still lets a strong preference repeat.
    fn = samplers.penalise_repeats(step, penalised, 0.01, START)
    out = samplers.generate(fn, (h0, tf.zeros([1, 8])), (), method="greedy", max_length=4)
    assert out.tokens[0].numpy().tolist() == [4, 4, 4, 4]
    # Copy ids (past the vocabulary) count as penalised words of their own.
    prefs[4], prefs[vocab] = -9.0, -0.1
    fn = samplers.penalise_repeats(step, penalised, float("inf"), START)
    out = samplers.generate(fn, (h0, tf.zeros([1, 8])), (), method="greedy", max_length=4)
    assert out.tokens[0, : out.lengths[0]].numpy().tolist() == [vocab, 5]
    with pytest.raises(ValueError, match="penalty must be >= 0"):
        samplers.penalise_repeats(step, penalised, -1.0, START)
    with pytest.raises(ValueError, match="groups has 2 entries"):
        samplers.penalise_repeats(step, penalised, 1.0, START, groups=[0, 1])
