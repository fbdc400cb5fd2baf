"""Captioning end to end on a small real subset: the CLI verbs, then the exported SavedModel
reloaded in a fresh process where rnnkit is not importable, on real JPEG/PNG/GIF/BMP bytes
and on the bad inputs whose behaviour docs/captioning.md defines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from apps.captioning.app import CaptioningApp, main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """prepare / train / evaluate / export through the CLI on the 'tiny' real subset."""
    base = tmp_path_factory.mktemp("captioning")
    out, exports = base / "run", base / "saved"
    common = ["--limit", "60"]
    assert main(["prepare", *common]) == 0
    assert main(["train", *common, "--epochs", "3", "--output", str(out)]) == 0
    assert main(["evaluate", *common, "--output", str(out)]) == 0
    assert main(["export", "--output", str(out), "--export-dir", str(exports)]) == 0
    return out, exports


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("images")
    cat = data.chelsea()
    Image.fromarray(cat).save(d / "cat.jpg", quality=90)
    Image.fromarray(data.coffee()).save(d / "coffee.png")
    Image.fromarray(data.camera()).save(d / "grey.png")  # greyscale
    rgba = np.zeros((90, 120, 4), np.uint8)
    rgba[10:80, 20:100] = [200, 40, 40, 255]  # an opaque red box on a transparent sheet
    Image.fromarray(rgba).save(d / "rgba.png")
    Image.fromarray(np.array([[[0, 128, 255]]], np.uint8)).save(d / "one.png")  # 1x1
    Image.fromarray(cat).save(d / "cat.gif")
    Image.fromarray(cat).save(d / "cat.bmp")
    Image.new("RGB", (10000, 10000), (90, 120, 200)).save(d / "huge.jpg", quality=40)
    Image.new("RGB", (10000, 10000), (90, 120, 200)).save(d / "huge.png")
    (d / "truncated.jpg").write_bytes((d / "cat.jpg").read_bytes()[:2000])
    (d / "text.jpg").write_bytes(b"this is not an image at all")
    (d / "empty.png").write_bytes(b"")
    return d


def test_cli_wrote_reports_and_model(run):
    out, exports = run
    metrics = json.loads((out / "reports" / "metrics.json").read_text())
    for kind in ("single", "scene"):
        for who in ("model_beam", "nearest_neighbour"):
            assert set(metrics[kind][who]) == {"bleu1", "bleu2", "bleu3", "bleu4"}
    assert 0.0 <= metrics["single"]["head_noun_accuracy_beam"] <= 1.0
    assert (out / "reports" / "examples.png").stat().st_size > 10_000
    assert (out / "model.keras").exists() and (exports / "1" / "saved_model.pb").exists()
    assert json.loads((exports / "1" / "assets.extra" / "metrics.json").read_text())["single"]
    config = json.loads((out / "run.json").read_text())
    assert config["app"] == "captioning" and config["options"]["backbone"] == "efficientnet_lite0"
    assert config["train"]["backbone"] == "efficientnet_lite0" and config["train"]["max_len"] > 1
    averaged = config["train"]["checkpoint_average"]
    assert averaged["epochs"][-1] == config["train"]["best_epoch"] and len(averaged["epochs"]) <= 3
    assert (out / "reports" / "training_curves.png").stat().st_size > 5_000
    assert not (out / "captioner.json").exists()  # run.json and vocab.json only


def test_export_stores_each_weight_once(run):
    """The SavedModel's variables are the decoder's and the CNN's weights, each saved once
    (float32: 4 bytes a parameter), plus a little index overhead."""
    from rnnkit.backbones import get_backbone

    out, exports = run
    decoder = json.loads((out / "reports" / "metrics.json").read_text())["decoder_params"]
    cnn = get_backbone("efficientnet_lite0").model.count_params()
    variables = sum(f.stat().st_size for f in (exports / "1" / "variables").iterdir())
    weights = 4 * (decoder + cnn)
    assert weights <= variables < 1.05 * weights, (variables, weights)


def test_export_is_servable(run):
    from rnnkit.servable import check_servable

    check_servable(run[1] / "1")


PROBE = textwrap.dedent("""
    import json, sys
    sys.modules["rnnkit"] = None  # make sure nothing from the project can be imported
    sys.modules["apps"] = None
    import numpy as np
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    f = model.signatures["serving_default"]
    results = {}
    for path in sys.argv[2:]:
        data = open(path, "rb").read()
        try:
            out = f(image_bytes=tf.constant([data, data]))
            caps = [c.decode() for c in out["captions"].numpy()]
            results[path.rsplit("/", 1)[-1]] = {"captions": caps,
                "scores": out["scores"].numpy().tolist(), "att": list(out["attention"].shape)}
        except tf.errors.InvalidArgumentError as exc:
            results[path.rsplit("/", 1)[-1]] = {"error": exc.message}
    g = model.signatures["caption_images"]
    for c in (1, 3, 4):
        out = g(images=tf.constant(np.full((2, 33, 47, c), 128.0, np.float32)))
        results[f"float{c}"] = {"captions": [x.decode() for x in out["captions"].numpy()]}
    try:
        g(images=tf.zeros((1, 8, 8, 2)))
    except tf.errors.InvalidArgumentError as exc:
        results["float2"] = {"error": exc.message}
    nan = np.full((1, 16, 16, 3), 100.0, np.float32)
    nan[0, 3, 5, 1] = np.nan
    try:
        out = g(images=tf.constant(nan))
        results["float_nan"] = {"captions": [x.decode() for x in out["captions"].numpy()]}
    except tf.errors.InvalidArgumentError as exc:
        results["float_nan"] = {"error": exc.message}
    empty = f(image_bytes=tf.constant([], tf.string))
    results["empty_batch"] = {"captions": empty["captions"].numpy().tolist()}
    print("RESULTS" + json.dumps(results))
""")


def test_export_in_a_fresh_process_without_rnnkit(run, images, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    files = sorted(str(p) for p in images.iterdir())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-I", str(script), str(run[1] / "1"), *files],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS"))
    res = json.loads(line[len("RESULTS"):])
    # Real pictures in every supported format, greyscale, RGBA, 1x1 and a huge JPEG caption.
    for name in ("cat.jpg", "coffee.png", "grey.png", "rgba.png", "one.png", "cat.gif",
                 "cat.bmp", "huge.jpg"):
        r = res[name]
        assert "error" not in r, (name, r)
        assert len(r["captions"]) == 2 and r["captions"][0] == r["captions"][1]
        assert r["att"][0] == 2 and r["att"][2] == 49
    # The same picture in JPEG, GIF and BMP gives the same kind of answer (no format quirks).
    assert np.isfinite(res["cat.jpg"]["scores"]).all()
    # Clear errors where it must fail.
    assert "too large" in res["huge.png"]["error"] and "10000" in res["huge.png"]["error"]
    assert "not a JPEG, PNG, GIF or BMP" in res["text.jpg"]["error"]
    assert "empty string" in res["empty.png"]["error"]
    assert "JPEG" in res["truncated.jpg"]["error"] or "jpeg" in res["truncated.jpg"]["error"]
    assert "channels must be 1, 3 or 4" in res["float2"]["error"]
    assert "images: image contains NaN" in res["float_nan"]["error"]
    for c in (1, 3, 4):
        assert len(res[f"float{c}"]["captions"]) == 2
    assert res["empty_batch"]["captions"] == []


def test_predict_prints_captions_and_plots(run, images, tmp_path, capsys):
    exports = run[1]
    plot_dir = tmp_path / "plots"
    code = main(["predict", "--export-dir", str(exports), "--plot", str(plot_dir),
                 str(images / "cat.jpg"), str(images / "text.jpg")])
    assert code == 0
    captured = capsys.readouterr()
    first = captured.out.splitlines()[0].split("\t")
    assert first[0].endswith("cat.jpg") and len(first) == 3
    assert "not a JPEG, PNG, GIF or BMP" in captured.err
    assert (plot_dir / "cat.caption.png").stat().st_size > 5_000
    assert main(["predict", "--export-dir", str(exports), str(tmp_path / "missing.jpg")]) == 2


def test_error_line_extracts_the_message():
    import tensorflow as tf

    from rnnkit.app import graph_error_message

    msg = ("Graph execution error:\n\nDetected at node x\n<stack traces unavailable>\n"
           "assertion failed: [image_bytes: empty string, expected an encoded image]\n\t [[{{node}}]]")
    exc = tf.errors.InvalidArgumentError(None, None, msg)
    assert graph_error_message(exc) == "image_bytes: empty string, expected an encoded image"


def test_nan_image_is_a_named_error(run):
    """A NaN in a float image fails the caption_images signature with a named error (an
    in-graph assertion), which predict's error handling turns into one line."""
    import tensorflow as tf

    from rnnkit.app import graph_error_message

    loaded = CaptioningApp().open_export(run[1] / "1")
    images = np.full((2, 40, 30, 3), 120.0, np.float32)
    fn = loaded.signature("caption_images")
    assert len(fn(images=tf.constant(images))["captions"].numpy()) == 2
    images[1, 7, 9, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        fn(images=tf.constant(images))
    assert graph_error_message(info.value) == "images: image contains NaN"


def test_gradient_probe_on_validation_pictures(run, tmp_path):
    """The probe is the trained decoder on validation pictures with its training loss; the
    gradient-flow report runs on it."""
    from rnnkit.gradient_flow import write_gradient_flow_report

    app = CaptioningApp()
    probe = app.gradient_probe(app.parse(["evaluate", "--limit", "60", "--output",
                                          str(run[0])]))
    grid, pooled, tokens = (t.numpy() for t in probe.inputs)
    assert grid.shape[0] == pooled.shape[0] == tokens.shape[0] == probe.targets.shape[0] > 4
    assert grid.shape[1:] == (49, 1280) and (tokens[:, 0] == 1).all()  # <start> first
    loss = float(probe.loss(probe.targets, probe.model(probe.inputs, training=False)))
    assert np.isfinite(loss) and loss > 0
    summary = write_gradient_flow_report(probe.model, probe.inputs, probe.targets, tmp_path,
                                         loss_fn=probe.loss)
    assert (tmp_path / "gradient_flow.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["loss"] == pytest.approx(loss, rel=1e-3)
