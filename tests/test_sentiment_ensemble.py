"""``train --ensemble``: members trained on one vocabulary, averaged in one saved model, on a
few hundred real IMDB reviews (the real fetch path, cached)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.sentiment.app import main

LIMIT = 300
# The n-gram branch is off: these tests check the Elman ensemble's own arithmetic.
ARGS = ["--limit", str(LIMIT), "--epochs", "1", "--max-len", "96", "--units", "16",
        "--vocab-size", "3000", "--batch-size", "32", "--no-ngram-branch"]


@pytest.mark.slow
def test_ensemble_averages_calibrated_members_and_reuses_them(tmp_path, capfd):
    out = tmp_path / "run"
    assert main(["train", *ARGS, "--ensemble", "base,crop", "--output", str(out)]) == 0
    summary = json.loads((out / "run.json").read_text())["train"]
    assert set(summary["members"]) == {"base", "crop"}
    assert summary["members"]["crop"]["hparams"]["crop_prob"] == 0.3
    assert summary["members"]["base"]["hparams"]["crop_prob"] == 0.0
    assert 0.0 <= summary["best_val_accuracy"] <= 1.0 and summary["temperature"] > 0

    # The saved model is the mean of the members' logits, each over its own temperature,
    # then over the ensemble's: recomputed here from the members saved on their own.
    model = keras.saving.load_model(out / "model.keras", compile=False)
    texts = ["A gem of a film, moving and funny.", "Dreadful. I walked out.", ""]
    ids = model.get_layer("clip_tokens")(model.get_layer("vectorizer")(tf.constant(texts)))
    expected = np.mean([
        keras.saving.load_model(out / "members" / name / "model.keras", compile=False)(
            ids)[:, 0].numpy() / summary["members"][name]["temperature"]
        for name in ("base", "crop")], axis=0) / summary["temperature"]
    np.testing.assert_allclose(model(tf.constant(texts))[:, 0].numpy(), expected,
                               rtol=1e-5, atol=1e-5)

    # A second run with the same settings loads the finished members instead of training.
    stamp = (out / "members" / "base" / "model.keras").stat().st_mtime_ns
    capfd.readouterr()
    assert main(["train", *ARGS, "--ensemble", "base,crop", "--output", str(out)]) == 0
    assert capfd.readouterr().out.count("already trained; loading it") == 2
    assert (out / "members" / "base" / "model.keras").stat().st_mtime_ns == stamp

    assert main(["train", *ARGS, "--ensemble", "base,nope", "--output",
                 str(tmp_path / "bad")]) == 2
    assert main(["train", *ARGS, "--ensemble", "base,base", "--output",
                 str(tmp_path / "bad")]) == 2

    exports = tmp_path / "saved_models"
    assert main(["export", "--output", str(out), "--export-dir", str(exports)]) == 0
    serve = tf.saved_model.load(str(exports / "1")).signatures["serving_default"]
    p = serve(text=tf.constant(["", "bad " * 25_000, "Ce film était magnifique !"]))[
        "probability"].numpy()
    assert p.shape == (3,) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
