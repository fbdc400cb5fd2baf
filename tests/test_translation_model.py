"""Translation model: the in-graph codec, a short real training whose loss falls, in-graph
greedy/beam decoding against a numpy reference decoder on the same weights, the export
reloaded in a fresh process (rnnkit blocked) with bad inputs, the gradient probe, and the
CLI end to end (another app's export refused)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from reference_decoders import ref_beam, ref_greedy

from apps.translation import train as T
from apps.translation.app import TranslationApp, main
from rnnkit.averaging import RecentWeights, average_checkpoints
from apps.translation.model import (
    END,
    SOURCE_END,
    START,
    UNK,
    TextCodec,
    detokenize,
    make_translate_fn,
    max_output_length,
    tokenize,
)
from rnnkit.modeling.vocabulary import Vocabulary

SMALL = ["--embedding-dim", "32", "--encoder-units", "32", "--decoder-units", "64",
         "--learning-rate", "3e-3"]


def _strings(t):
    return [x.decode("utf-8") for x in np.asarray(t).ravel()]


# --------------------------------------------------------------------------- codec


def test_tokenize_keeps_technical_tokens():
    toks = tokenize(tf.constant(["Vaya a Ver ▸ Barra, 3.5 SUMA(A1:B2) e-mail.", "", "Привет мир"]))
    assert _strings(toks[0]) == ["Vaya", "a", "Ver", "▸", "Barra", ",", "3.5", "SUMA", "(",
                                 "A1:B2", ")", "e-mail", "."]
    assert toks[1].shape[0] == 0
    assert _strings(toks[2]) == ["Привет", "мир"]
    # Invalid UTF-8 does not crash the graph.
    assert tokenize(tf.constant([b"caf\xff"])).shape[0] == 1


def test_detokenize():
    words = tf.constant([["Choose", "View", "-", "Toolbars", "(", "x", ")", ".", ""]])
    assert _strings(detokenize(words)) == ["Choose View - Toolbars (x)."]


def test_codec_copy_ids_and_decoding():
    src_vocab = Vocabulary(["abre", "el"])
    tgt_vocab = Vocabulary(["Opens", "the", ".", "42"])
    V = len(tgt_vocab)
    codec = TextCodec(src_vocab, tgt_vocab)
    enc = codec.encode_source(tf.constant(["Abre el Navegador 42 ."]))
    assert _strings(enc["tokens"][0]) == ["Abre", "el", "Navegador", "42", ".", SOURCE_END]
    el = src_vocab.stoi["el"]
    assert enc["ids"][0].numpy().tolist() == [UNK, el, UNK, UNK, UNK, END]  # unknowns -> <unk>
    # Copy ids: English vocabulary id when English has the word, else V + position.
    assert enc["ext"][0].numpy().tolist() == [V + 0, V + 1, V + 2, 7, 6, END]
    dec = codec.encode_target(tf.constant(["Opens the Navigator 42 ."]), enc["tokens"])
    # "Navigator" is not in the source: <unk>; numbers and known words keep vocab ids.
    assert dec["inputs"][0].numpy().tolist() == [START, 4, 5, 3, 7, 6]
    assert dec["outputs"][0].numpy().tolist() == [4, 5, 3, 7, 6, END]
    dec2 = codec.encode_target(tf.constant(["Opens Navegador"]), enc["tokens"])
    assert dec2["outputs"][0].numpy().tolist() == [4, V + 2, END]  # copied from position 2
    att = tf.one_hot([[2, 2, 0]], 6)
    text = codec.decode(tf.constant([[4, V + 2, 3]]), tf.constant([3]), enc["tokens"], att)
    assert _strings(text) == ["Opens Navegador Abre"]  # <unk> -> its most attended word


# --------------------------------------------------------------------------- training


def _run(verb: str, *args: str):
    return TranslationApp().parse([verb, *args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run = _run("train", "--output", str(out), "--epochs", "4", "--batch-size", "32",
               "--seed", "3", "--limit", "400", "--patience", "10", *SMALL)
    summary = T.train(run)
    model, codec = T.load_trained(run)
    return out, summary, model, codec


@pytest.mark.slow
def test_short_training_loss_falls(trained):
    out, summary, _, _ = trained
    hist = json.loads((out / "history.json").read_text())["history"]
    assert hist["loss"][-1] < 0.85 * hist["loss"][0], hist["loss"]
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    assert summary["parameters"] > 0 and (out / "model.keras").exists()


def _np_weights(model):
    g = lambda v: np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float64)
    return {
        "emb": g(model.target_embedding.embeddings),
        "Wx": g(model.decoder.cell.kernel), "Wh": g(model.decoder.cell.recurrent_kernel),
        "b": g(model.decoder.cell.bias),
        "Wq": g(model.attention.query_projection.kernel),
        "Wc": g(model.combine.kernel), "bc": g(model.combine.bias),
        "Wo": g(model.vocab_logits.kernel), "bo": g(model.vocab_logits.bias),
        "Wg": g(model.copy_gate.kernel), "bg": g(model.copy_gate.bias),
    }


def np_step(w, V, token, h, mem, mask, ext):
    """Reference decoder step for ONE hypothesis: log p over V + S, new h, attention."""
    e = w["emb"][token if token < V else 3]
    h = np.tanh(e @ w["Wx"] + h @ w["Wh"] + w["b"])
    scores = np.where(mask, mem @ (h @ w["Wq"]) / np.sqrt(mem.shape[1]), -1e9)
    a = np.exp(scores - scores.max())
    a /= a.sum()
    c = a @ mem
    att = np.tanh(np.concatenate([c, h]) @ w["Wc"] + w["bc"])
    logits = att @ w["Wo"] + w["bo"]
    pv = np.exp(logits - logits.max())
    pv /= pv.sum()
    gate = 1 / (1 + np.exp(-(np.concatenate([c, h, e]) @ w["Wg"] + w["bg"])[0]))
    p = np.zeros(V + len(mem))
    p[:V] = gate * pv
    for j, x in enumerate(ext):
        p[x] += (1 - gate) * a[j]
    lp = np.log(p + 1e-12)
    lp -= np.log(np.exp(lp - lp.max()).sum()) + lp.max()  # the samplers' log_softmax
    return lp, h, a


@pytest.mark.slow
def test_in_graph_decoding_matches_numpy_reference(trained):
    _, _, model, codec = trained
    texts = ["Abre un documento nuevo.", "Inserta una tabla", "Vaya a Ver ▸ Barra de estado.",
             "Devuelve el valor 42 de la celda A1."]
    enc = codec.encode_source(tf.constant(texts))
    h0, (mem, mask, ext) = model.decode_context(enc["ids"], enc["ext"])
    w = _np_weights(model)
    V = codec.target_size
    max_len = max_output_length(enc["length"]).numpy()
    greedy = make_translate_fn(model, codec, beam_width=1)(tf.constant(texts))
    beam = make_translate_fn(model, codec, beam_width=3, length_penalty=0.6)(tf.constant(texts))
    for i in range(len(texts)):
        m, mk, ex = mem[i].numpy().astype(np.float64), mask[i].numpy(), ext[i].numpy()

        def step(tok, h):
            return np_step(w, V, tok, h, m, mk, ex)

        toks, total = ref_greedy(step, h0[i].numpy().astype(np.float64), int(max_len[i]), START, END)
        n = int(greedy["lengths"][i])
        assert greedy["tokens"][i, :n].numpy().tolist() == toks
        assert float(greedy["token_scores"][i].numpy().sum()) == pytest.approx(total, abs=1e-3)
        btoks, bscore, _ = ref_beam(step, h0[i].numpy().astype(np.float64), int(max_len[i]), 3, 0.6,
                                  START, END)
        n = int(beam["lengths"][i])
        assert beam["tokens"][i, :n].numpy().tolist() == btoks
        assert float(beam["score"][i]) == pytest.approx(bscore, abs=1e-3)


# --------------------------------------------------------------------------- export

FRESH = r"""
import sys, json
sys.modules["rnnkit"] = None          # the editable install would make it importable
sys.modules["apps"] = None
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
f = m.signatures["serving_default"]
texts = [b"Abre un documento nuevo.", b"", b"   ", " ".join(["palabra"] * 1000).encode(),
         "Привет мир 你好".encode(), b"caf\xff roto", "Vaya a Ver ▸ Barra de estado".encode()]
out = f(text=tf.constant(texts))
a = m.signatures["attention"](text=tf.constant(texts[:1]))
print(json.dumps({
    "translation": [t.decode("utf-8") for t in out["translation"].numpy()],
    "score": out["score"].numpy().tolist(),
    "token_scores_shape": list(out["token_scores"].shape),
    "att_shape": list(a["attention"].shape),
    "src": [t.decode() for t in a["source_tokens"][0].numpy()],
    "words": [t.decode() for t in a["output_tokens"][0].numpy()],
}))
"""


@pytest.mark.slow
def test_export_reloads_in_fresh_process_and_handles_bad_inputs(trained, tmp_path, capsys):
    out, _, _, _ = trained
    assert main(["export", "--output", str(out), "--export-dir", str(tmp_path / "sm")]) == 0
    assert "MiB" in capsys.readouterr().out
    path = tmp_path / "sm" / "1"
    assert path.name == "1" and (path / "assets.extra" / "tf_serving_warmup_requests").exists()
    from rnnkit.servable import check_servable

    check_servable(path)
    res = subprocess.run([sys.executable, "-I", "-c", FRESH, str(path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    tr = got["translation"]
    assert len(tr) == 7
    assert tr[1] == "" and tr[2] == ""  # empty and blank inputs: empty translation
    assert all(isinstance(t, str) for t in tr)  # the others: an answer, no crash
    assert all(np.isfinite(got["score"]))
    # The 1,000-word input is cut to 200 tokens; output at most 300 tokens.
    assert got["token_scores_shape"][1] <= 300
    assert got["src"][-1] == SOURCE_END and got["att_shape"][2] == len(got["src"])
    assert got["att_shape"][1] == len(got["words"])


# --------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_gradient_probe_measures_both_recurrent_layers(trained):
    from rnnkit.gradient_flow import gradient_flow

    out, _, model, _ = trained
    probe = TranslationApp().gradient_probe(_run("evaluate", "--output", str(out),
                                                 "--limit", "400"))
    assert probe.inputs[0].shape[0] == 32 and probe.targets.shape == probe.inputs[3].shape
    nll = probe.model(probe.inputs)
    assert float(probe.loss(probe.targets, nll)) > 0
    flow = gradient_flow(probe.model, probe.inputs, probe.targets, loss_fn=probe.loss)
    names = " ".join(layer.name for layer in flow.layers)
    assert "encoder" in names and "decoder" in names, names
    assert np.isfinite(flow.loss)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, capsys):
    run, sm = tmp_path / "run", tmp_path / "sm"
    small = ["--embedding-dim", "32", "--encoder-units", "32", "--decoder-units", "48"]
    # Before training: a clear error naming the missing model, not a traceback.
    assert main(["evaluate", "--limit", "200", "--output", str(run)]) == 2
    assert "run `rnnkit translation train` first" in capsys.readouterr().err
    assert main(["prepare", "--limit", "200"]) == 0
    assert "kept" in capsys.readouterr().out
    assert main(["train", "--limit", "200", "--epochs", "1", "--output", str(run), *small]) == 0
    assert main(["evaluate", "--limit", "200", "--output", str(run), "--beam-width", "2"]) == 0
    printed = capsys.readouterr().out
    assert "beam bleu_cased" in printed and "translation_memory bleu_cased" in printed
    metrics = json.loads((run / "reports" / "metrics.json").read_text())
    for key in ("greedy", "beam", "translation_memory"):
        assert set(metrics[key]) >= {"bleu_cased", "bleu_lowercased", "chrf"}
    assert metrics["test_pairs"] == 200
    # The short-segment report and the repeated-word check, printed and written.
    assert "short beam exact_match" in printed and "repeats a word (references)" in printed
    short = metrics["short_segments"]["beam"]
    assert 0 < short["pairs"] < 200 and 0.0 <= short["exact_match"] <= 1.0
    assert metrics["one_word_strings"]["pairs"] == 200
    assert metrics["repetition"]["references"]["outputs"] == 200
    # A validation sweep writes its own file and leaves the test figures alone.
    assert main(["evaluate", "--limit", "200", "--output", str(run), "--beam-width", "2",
                 "--split", "validation", "--repeat-penalty", "inf"]) == 0
    assert "validation split, repeat penalty inf" in capsys.readouterr().out
    assert (run / "reports" / "metrics_validation_repeatinf.json").is_file()
    assert json.loads((run / "reports" / "metrics.json").read_text()) == metrics
    for png in ("training_curves.png", "attention.png"):
        assert (run / "reports" / png).stat().st_size > 1000
    assert main(["export", "--output", str(run), "--export-dir", str(sm)]) == 0
    assert main(["predict", "--export-dir", str(sm), "--plot", str(tmp_path / "a.png"),
                 "Abre el documento."]) == 0
    assert "score" in capsys.readouterr().out
    assert (tmp_path / "a.png").stat().st_size > 1000
    # Bad input: a clear error, exit code 2.
    assert main(["train", "--data", "anki:/nope.txt", "--output", str(run)]) == 2
    assert "anki file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_refuses_another_apps_text_export(tmp_path, capsys):
    """An export whose serving_default also takes ``text`` but has no translation output
    (the sentiment export's layout) is refused with one error line, not a KeyError."""
    from rnnkit.export import export_saved_model

    class Labeller(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            probability = tf.sigmoid(tf.cast(tf.strings.length(text), tf.float32) - 5.0)
            label = tf.where(probability >= 0.5, "positive", "negative")
            return {"label": label, "probability": probability}

    module = Labeller()
    path = export_saved_model(module, tmp_path / "sentiment", {"serving_default": module.serve},
                              check=False)
    assert main(["predict", "--model", str(path), "Abre el documento."]) == 2
    err = capsys.readouterr().err
    assert "not a translation export" in err and "translation" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- repetition


def test_repeated_words_check():
    from apps.translation.repetition import repeated_words, repetition_report

    src = "desplazar a la última posición"
    assert repeated_words("move to move the current position", src) == ["move"]
    # Function words repeat freely; so does a word the source repeats as often.
    assert repeated_words("the value of the cell", "el valor de la celda") == []
    assert repeated_words("Sheet - Sheet", "Hoja ▸ Hoja") == []
    assert repeated_words("Sheet - Sheet - Sheet", "Hoja ▸ Hoja") == ["sheet"]
    report = repetition_report(["move to move", "fine"], [src, "bien"])
    assert report["with_repeats"] == 1 and report["examples"][0]["repeated"] == ["move"]
    with pytest.raises(ValueError, match="2 outputs but 1 sources"):
        repetition_report(["a", "b"], ["x"])


def test_content_mask():
    from apps.translation.repetition import content_mask

    mask = content_mask(["<pad>", "<start>", "<end>", "<unk>", "the", "Sheet", "▸", "42",
                         "-", "e-mail", "x"])
    assert mask.tolist() == [0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0]


def test_repeat_penalty_stops_a_decoder_that_repeats():
    """A toy step that always prefers token 5 (a content word) then the end token: without
    the penalty greedy and beam search say 5 until the length limit, with an infinite
    penalty once, with a small one the model's preference still wins."""
    from apps.translation.repetition import penalised_step
    from rnnkit import samplers

    V, S = 8, 3
    pref = np.full(V + S, -8.0, np.float32)
    pref[5], pref[END] = -0.1, -3.0

    def step(tokens, h, context):
        n = tf.shape(tokens)[0]
        return tf.tile(tf.constant(pref)[None], [n, 1]), h, tf.fill([n, S], 1.0 / S)

    # Ids 4-7 are content words; 6 is 5 in another case.
    vocab = ["<pad>", "<start>", "<end>", "<unk>", "open", "Sheet", "sheet", "file"]
    h0 = tf.zeros([2, 4])

    def decode(penalty, width, pref=pref):
        fn, state = step, h0
        if penalty:
            fn = penalised_step(step, vocab, penalty, START)
            state = fn.initial_state(h0, S)
        out = samplers.generate(fn, state, (), beam_width=width, max_length=6)
        return out.tokens.numpy().tolist(), out.lengths.numpy().tolist()

    for width in (1, 3):
        tokens, lengths = decode(0.0, width)
        assert lengths == [6, 6] or tokens[0][:5] == [5] * 5
        tokens, lengths = decode(float("inf"), width)
        assert lengths == [1, 1] and tokens[0][0] == 5
        tokens, lengths = decode(0.5, width)
        assert lengths[0] > 1 and set(tokens[0][: lengths[0]]) == {5}
    # "sheet" after "Sheet" is a repeat too: with 6 as the second choice, an infinite
    # penalty ends the output instead of switching case.
    pref[6] = -0.5
    tokens, lengths = decode(float("inf"), 3)
    assert lengths == [1, 1] and tokens[0][0] == 5


def test_case_groups():
    from apps.translation.repetition import case_groups

    groups, n = case_groups(["<pad>", "Sheet", "sheet", "file", "SHEET"])
    assert n == 3 and groups.tolist() == [0, 1, 1, 2, 1]


def test_label_smoothing_changes_only_the_training_loss():
    from apps.translation.model import Translator

    model = Translator(12, 10, embedding_dim=8, encoder_units=8, decoder_units=8, dropout=0.0,
                       label_smoothing=0.2)
    model.build()
    src = tf.constant([[4, 5, END]])
    inputs = (src, src, tf.constant([[START, 4, 5]]), tf.constant([[4, 5, END]]))
    plain = Translator.from_config({**model.get_config(), "label_smoothing": 0.0})
    plain.build()
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(model(inputs, training=False), plain(inputs, training=False))
    assert not np.allclose(model(inputs, training=True), plain(inputs, training=True))
    with pytest.raises(ValueError, match="label_smoothing"):
        Translator(12, 10, label_smoothing=1.0)


def test_checkpoint_average_is_kept_only_when_it_helps(trained):
    _, _, model, codec = trained
    splits, _ = T.data.load_splits(T.data.parse_spec("help"), limit=400)
    val = T.make_dataset(splits["validation"][:64], codec, 32, False, 0)
    good = model.get_weights()
    rng = np.random.default_rng(0)
    noisy = [w + rng.normal(0, 0.5 * (np.std(w) + 1e-3), w.shape).astype(w.dtype) for w in good]

    def history(*epochs):
        recent = RecentWeights(3)
        recent.set_model(model)
        for i, weights in enumerate(epochs):
            model.set_weights(weights)
            recent.on_epoch_end(i)
        return recent

    # Epoch 2 (the "best", whose weights the model holds) is the good one plus noise; the
    # average with the good epoch halves the noise and is kept.
    def score(m):
        return T.validation_loss(m, val)

    recent = history(good, noisy)
    noisy_loss = T.validation_loss(model, val)
    result = average_checkpoints(model, recent, 1, 3, score)
    assert result["epochs"] == [1, 2] and result["adopted"]
    assert result["val_loss_average"] < result["val_loss_best_epoch"]
    assert result["val_loss_best_epoch"] == pytest.approx(noisy_loss, abs=1e-4)
    np.testing.assert_allclose(model.get_weights()[0], (good[0] + noisy[0]) / 2, rtol=1e-5)
    # Averaging the good weights with all-zero ones only hurts: the model keeps its own.
    recent = history([np.zeros_like(w) for w in good], good)
    result = average_checkpoints(model, recent, 1, 3, score)
    assert not result["adopted"]
    np.testing.assert_array_equal(model.get_weights()[0], good[0])
    # Only epochs up to the best one, at most `count` of them, are averaged.
    recent = history(good, good, noisy)
    assert average_checkpoints(model, recent, 1, 3, score)["epochs"] == [1, 2]
    model.set_weights(good)


def test_never_repeat_on_real_sentences(trained):
    """With an infinite penalty no output of the (small, repetitive) trained model names a
    content word twice, whatever its case; without it some do."""
    from apps.translation.repetition import case_groups, content_mask

    _, _, model, codec = trained
    splits, _ = T.data.load_splits(T.data.parse_spec("help"), limit=400)
    texts = tf.constant([s for s, _ in splits["validation"][:48]])
    vocab = codec.target_vocab.itos
    mask, (groups, _) = content_mask(vocab), case_groups(vocab)

    def repeats(penalty):
        out = make_translate_fn(model, codec, beam_width=3, repeat_penalty=penalty)(texts)
        found = 0
        for row, n in zip(out["tokens"].numpy(), out["lengths"].numpy()):
            words = [("copy", t) if t >= len(vocab) else ("word", groups[t])
                     for t in row[:n] if t >= len(vocab) or mask[t]]
            found += len(words) != len(set(words))
        return found

    assert repeats(float("inf")) == 0
    assert repeats(0.0) > 0
