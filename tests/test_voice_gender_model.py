"""voice_gender model: training on synthetic voices lowers the loss; the export runs raw
waveforms and WAV bytes in a process where rnnkit is not importable; bad inputs behave.

Synthetic espeak-ng voices only check that the machinery works: no accuracy is reported.
"""

from __future__ import annotations

import argparse
import io
import json
import wave

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import last_json_line, run_python_without_rnnkit
from test_voice_gender_fixtures import synthesize

from apps.voice_gender import data as vdata
from apps.voice_gender.export import VoiceServing, resample_to_16k, warmup_requests
from apps.voice_gender.model import build_model, classify
from apps.voice_gender.pipeline import train_dataset
from rnnkit.export import export_saved_model

pytestmark = pytest.mark.slow


def wav_bytes(x: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        pcm = np.clip(np.round(np.repeat(x[:, None], channels, 1) * 32767), -32768, 32767)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained a few epochs on espeak clips, exported; plus the clips."""
    root = tmp_path_factory.mktemp("vg_model")
    rows = synthesize(root / "clips", per_voice=3, seed=5)
    audio = [vdata.load_audio(p) for p, _, _ in rows]
    labels = np.array([0 if lab == "female" else 1 for _, lab, _ in rows])
    ds = tf.data.Dataset.from_generator(
        lambda: ((vdata.to_int16(a), y, "") for a, y in zip(audio, labels)),
        output_signature=(tf.TensorSpec([None], tf.int16), tf.TensorSpec([], tf.int64),
                          tf.TensorSpec([], tf.string)))
    keras.utils.set_random_seed(0)
    model = build_model(2, units=32, proj=32, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  weighted_metrics=[])
    batches = train_dataset(ds, 12, seed=0, weights={})
    history = model.fit(batches, epochs=8, verbose=0).history["loss"]
    module = VoiceServing(model, ["female", "male"])
    path = export_saved_model(
        module, root / "saved",
        {"serving_default": module.serve_waveform, "serving_wav": module.serve_wav},
        metrics={"note": "synthetic test model"}, warmup_requests=warmup_requests())
    return argparse.Namespace(model=model, history=history, export=path, audio=audio,
                              labels=labels, root=root)


def test_training_loss_falls(trained):
    first, last = trained.history[0], min(trained.history[-3:])
    assert last < first * 0.8, trained.history


def test_windowed_classify_is_length_robust(trained):
    """A long clip (many windows) made of one voice gets that voice's prediction, and
    padding a clip inside a batch does not change its probabilities."""
    clip = trained.audio[0]
    long_clip = np.tile(clip, int(np.ceil(20 * 16000 / len(clip))))[: 20 * 16000]
    batch = np.zeros((2, len(long_clip)), np.float32)
    batch[0, : len(clip)] = clip
    batch[1] = long_clip
    out = classify(trained.model, batch, np.array([len(clip), len(long_clip)]))
    alone = classify(trained.model, clip[None], np.array([len(clip)]))
    np.testing.assert_allclose(out["probabilities"][0], alone["probabilities"][0], atol=1e-5)
    assert out["status"].numpy().tolist() == [b"ok", b"ok"]
    assert abs(float(out["probabilities"][1, 0]) - float(alone["probabilities"][0, 0])) < 0.25


def test_in_graph_resampling_preserves_a_tone():
    t = np.arange(44100) / 44100
    y = resample_to_16k(tf.constant(np.sin(2 * np.pi * 440 * t), tf.float32), tf.constant(44100))
    assert y.shape[0] == 16000
    ref = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(y.numpy()[200:-200] - ref[200:-200]).max() < 0.02


def test_export_in_fresh_process_without_rnnkit(trained, tmp_path):
    clips = trained.audio[:4]
    width = max(len(c) for c in clips)
    wave_batch = np.zeros((len(clips), width), np.float32)
    for i, c in enumerate(clips):
        wave_batch[i, : len(c)] = c
    np.save(tmp_path / "waves.npy", wave_batch)
    np.save(tmp_path / "lengths.npy", np.array([len(c) for c in clips], np.int64))
    # The same clips as 16 kHz WAV bytes, and clip 0 again at 22.05 kHz stereo (resampled).
    import librosa

    wavs = [wav_bytes(c, 16000) for c in clips]
    wavs.append(wav_bytes(librosa.resample(clips[0], orig_sr=16000, target_sr=22050), 22050, 2))
    (tmp_path / "wavs.json").write_text(json.dumps([w.hex() for w in wavs]))
    code = f"""
import json, numpy as np, tensorflow as tf
m = tf.saved_model.load({str(trained.export)!r})
f, g = m.signatures["serving_default"], m.signatures["serving_wav"]
w = np.load({str(tmp_path / 'waves.npy')!r}); n = np.load({str(tmp_path / 'lengths.npy')!r})
a = f(waveform=tf.constant(w), length=tf.constant(n))
wavs = [bytes.fromhex(h) for h in json.load(open({str(tmp_path / 'wavs.json')!r}))]
b = g(wav_bytes=tf.constant(wavs))
res = {{"sigs": sorted(m.signatures.keys())}}
for k, out in (("wave", a), ("wav", b)):
    res[k] = {{"label": [x.decode() for x in out["label"].numpy()],
              "p": out["probabilities"].numpy().tolist(),
              "names": [[x.decode() for x in r] for r in out["class_names"].numpy()],
              "status": [x.decode() for x in out["status"].numpy()]}}
print(json.dumps(res))
"""
    r = run_python_without_rnnkit(code, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = last_json_line(r.stdout)
    assert res["sigs"] == ["serving_default", "serving_wav"]
    assert res["wave"]["names"] == [["female", "male"]] * 4
    assert res["wave"]["status"] == ["ok"] * 4
    assert all(lab in ("female", "male") for lab in res["wave"]["label"])
    want = classify(trained.model, wave_batch, np.array([len(c) for c in clips]))["probabilities"]
    np.testing.assert_allclose(res["wave"]["p"], want.numpy(), atol=1e-5)
    # WAV bytes: 16-bit quantisation only; the 22.05 kHz stereo copy is resampled in-graph.
    np.testing.assert_allclose(res["wav"]["p"][:4], res["wave"]["p"], atol=0.03)
    np.testing.assert_allclose(res["wav"]["p"][4], res["wave"]["p"][0], atol=0.05)


def test_bad_and_edge_inputs_in_fresh_process(trained, tmp_path):
    short = wav_bytes(np.full(800, 0.3), 16000)   # 0.05 s
    bad_rate = wav_bytes(np.zeros(4000), 4000)
    code = f"""
import json, numpy as np, tensorflow as tf
m = tf.saved_model.load({str(trained.export)!r})
f, g = m.signatures["serving_default"], m.signatures["serving_wav"]
res = {{}}
t = np.arange(3 * 60 * 16000, dtype=np.float32) / 16000
w = np.zeros((4, t.size), np.float32)
w[0] = 0.2 * np.sin(2 * np.pi * 150 * t)  # a 3-minute clip
w[2, :1000] = 0.5                         # 1000 samples = 0.0625 s
out = f(waveform=tf.constant(w), length=tf.constant([t.size, 16000, 1000, 0], tf.int64))
res["status"] = [s.decode() for s in out["status"].numpy()]
res["label"] = [s.decode() for s in out["label"].numpy()]
res["p"] = out["probabilities"].numpy().tolist()
errors = {{}}
for name, call in {{
    "nan": lambda: f(waveform=tf.constant([[0.1, float("nan")] * 4000]), length=tf.constant([8000], tf.int64)),
    "inf": lambda: f(waveform=tf.constant([[0.1, float("inf")] * 4000]), length=tf.constant([8000], tf.int64)),
    "length": lambda: f(waveform=tf.zeros([1, 100]), length=tf.constant([200], tf.int64)),
    "rate": lambda: g(wav_bytes=tf.constant([bytes.fromhex({bad_rate.hex()!r})])),
    "notwav": lambda: g(wav_bytes=tf.constant([b"hello, not a wav file"])),
}}.items():
    try:
        call(); errors[name] = "no error"
    except tf.errors.InvalidArgumentError as e:
        errors[name] = "InvalidArgument: " + e.message
res["errors"] = errors
s = g(wav_bytes=tf.constant([bytes.fromhex({short.hex()!r})]))
res["short_wav"] = s["status"].numpy()[0].decode()
print(json.dumps(res))
"""
    r = run_python_without_rnnkit(code, tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = last_json_line(r.stdout)
    assert res["status"] == ["ok", "silent", "too_short", "too_short"]
    assert res["label"][0] in ("female", "male") and res["label"][1:] == ["", "", ""]
    assert res["p"][1] == res["p"][2] == [0.5, 0.5]
    err = res["errors"]
    assert "NaN or Inf" in err["nan"] and "NaN or Inf" in err["inf"], err
    assert "length must not exceed" in err["length"], err
    assert "sample rate" in err["rate"] and "4000" in err["rate"], err
    assert err["notwav"].startswith("InvalidArgument"), err
    assert res["short_wav"] == "too_short"


def test_export_one_second_thirty_seconds_and_8khz(trained, tmp_path):
    """Letters and single words (1 s), long lines (30 s) and telephone-rate WAVs all classify."""
    import librosa

    speech = trained.audio[0]
    # The loudest second of a real (synthetic-voice) utterance: voiced speech throughout.
    hop = 1600
    energy = [float(np.square(speech[i:i + 16000]).mean())
              for i in range(0, max(1, len(speech) - 16000), hop)]
    start = hop * int(np.argmax(energy))
    one = speech[start:start + 16000].astype(np.float32)
    assert len(one) == 16000
    thirty = np.tile(np.concatenate(trained.audio), 30)[: 30 * 16000].astype(np.float32)
    at_8k = librosa.resample(one, orig_sr=16000, target_sr=8000)
    wavs = [wav_bytes(one, 16000), wav_bytes(thirty, 16000), wav_bytes(at_8k, 8000)]
    (tmp_path / "wavs.json").write_text(json.dumps([w.hex() for w in wavs]))
    code = f"""
import json, tensorflow as tf
m = tf.saved_model.load({str(trained.export)!r})
g = m.signatures["serving_wav"]
wavs = [bytes.fromhex(h) for h in json.load(open({str(tmp_path / 'wavs.json')!r}))]
out = [g(wav_bytes=tf.constant([w])) for w in wavs]
print(json.dumps({{"status": [o["status"].numpy()[0].decode() for o in out],
                  "label": [o["label"].numpy()[0].decode() for o in out],
                  "p": [o["probabilities"].numpy()[0].tolist() for o in out]}}))
"""
    r = run_python_without_rnnkit(code, tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = last_json_line(r.stdout)
    assert res["status"] == ["ok", "ok", "ok"], res
    assert all(lab in ("female", "male") for lab in res["label"]), res
    for p in res["p"]:
        assert abs(sum(p) - 1.0) < 1e-4 and p != [0.5, 0.5], res
