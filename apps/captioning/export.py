"""The serving graph: encoded image bytes (or float images) in, captions and scores out.

Everything runs inside the SavedModel with core TensorFlow ops: format sniffing, a size
guard read from the file header, decoding, alpha compositing, resizing, the frozen CNN,
and beam search (``rnnkit.samplers``) over the recurrent decoder.

Signatures
----------
``serving_default`` (input ``image_bytes``: string ``[B]``) and ``caption_images`` (input
``images``: float32 ``[B, H, W, C]`` with values 0..255, ``C`` in 1, 3, 4). Both return
``captions`` (string ``[B]``), ``scores`` (float32 ``[B]``, length-normalised
log-probability), ``lengths`` (int32 ``[B]``) and ``attention`` (float32 ``[B, T, 49]``:
attention weights over the 7x7 grid per generated word).

Input behaviour (defined, tested)
---------------------------------
* JPEG, PNG, GIF (first frame), BMP. Anything else, an empty string or a truncated /
  corrupt file fails the request with ``InvalidArgumentError`` naming the problem.
* Greyscale becomes RGB; an alpha channel (PNG, or C=4 images) is composited onto white,
  the way the stamps' transparent background would look on paper.
* Any size from 1x1 up is resized (anti-aliased) to 224x224, ignoring aspect ratio.
* Memory guard, before decoding: a JPEG is decoded DCT-downscaled (1/2, 1/4, 1/8) so that
  its long side is at most 2048 px; a JPEG over 16384 px a side, or a PNG/GIF/BMP over
  4096x4096 pixels, is refused with an error naming its size. A float ``images`` batch is
  refused above 4096x4096.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from apps.captioning.model import PAD

MAX_DECODE_SIDE = 2048
MAX_JPEG_SIDE = MAX_DECODE_SIDE * 8
MAX_PIXELS = 4096 * 4096


def _u32_be(b):
    v = tf.cast(tf.io.decode_raw(b, tf.uint8), tf.int64)
    return ((v[0] * 256 + v[1]) * 256 + v[2]) * 256 + v[3]


def _u16_le(b):
    v = tf.cast(tf.io.decode_raw(b, tf.uint8), tf.int64)
    return v[0] + 256 * v[1]


def _i32_le(b):
    v = tf.cast(tf.io.decode_raw(b, tf.uint8), tf.int64)
    u = v[0] + 256 * (v[1] + 256 * (v[2] + 256 * v[3]))
    return tf.where(u >= 2**31, u - 2**32, u)


def _composite_on_white(rgba):
    """float32 RGBA 0..255 -> RGB composited onto white."""
    alpha = rgba[..., 3:4] / 255.0
    return rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)


def decode_image_bytes(data, size: int):
    """One encoded image -> float32 (size, size, 3) RGB in 0..255 (see the module docs)."""
    n = tf.strings.length(data)
    header = tf.strings.substr(data, 0, 8, unit="BYTE")
    is_jpeg = tf.equal(tf.strings.substr(header, 0, 3), b"\xff\xd8\xff")
    is_png = tf.equal(header, b"\x89PNG\r\n\x1a\n")
    is_gif = tf.logical_or(tf.equal(tf.strings.substr(header, 0, 6), b"GIF87a"),
                           tf.equal(tf.strings.substr(header, 0, 6), b"GIF89a"))
    is_bmp = tf.equal(tf.strings.substr(header, 0, 2), b"BM")
    known = tf.reduce_any(tf.stack([is_jpeg, is_png, is_gif, is_bmp]))
    checks = [tf.debugging.Assert(n > 0, ["image_bytes: empty string, expected an encoded image"]),
              tf.debugging.Assert(known, [
                  "image_bytes: not a JPEG, PNG, GIF or BMP image (first bytes:", header, ")"])]
    with tf.control_dependencies(checks):
        data = tf.identity(data)
    # Header dimensions, read before any pixel is decoded (memory guard).
    long_enough = n >= 26

    def header_dims():
        png_wh = tf.stack([_u32_be(tf.strings.substr(data, 16, 4)),
                           _u32_be(tf.strings.substr(data, 20, 4))])
        gif_wh = tf.stack([_u16_le(tf.strings.substr(data, 6, 2)),
                           _u16_le(tf.strings.substr(data, 8, 2))])
        bmp_wh = tf.abs(tf.stack([_i32_le(tf.strings.substr(data, 18, 4)),
                                  _i32_le(tf.strings.substr(data, 22, 4))]))
        return tf.where(is_png, png_wh, tf.where(is_gif, gif_wh, bmp_wh))

    def jpeg_dims():
        hwc = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
        return tf.stack([hwc[1], hwc[0]])

    wh = tf.cond(is_jpeg, jpeg_dims,
                 lambda: tf.cond(long_enough, header_dims,
                                 lambda: tf.constant([0, 0], tf.int64)))
    long_side = tf.reduce_max(wh)
    pixels = wh[0] * wh[1]
    size_ok = tf.where(is_jpeg, long_side <= MAX_JPEG_SIDE, pixels <= MAX_PIXELS)
    guard = tf.debugging.Assert(size_ok, [
        "image_bytes: image of", wh[0], "x", wh[1],
        f"pixels is too large (limits: JPEG {MAX_JPEG_SIDE} px a side, decoded downscaled; "
        f"PNG/GIF/BMP {MAX_PIXELS} pixels)"])
    with tf.control_dependencies([guard]):
        data = tf.identity(data)

    def decode_jpeg():
        def with_ratio(r):
            return lambda: tf.io.decode_jpeg(data, channels=3, ratio=r, try_recover_truncated=False)

        return tf.case([(long_side <= MAX_DECODE_SIDE, with_ratio(1)),
                        (long_side <= 2 * MAX_DECODE_SIDE, with_ratio(2)),
                        (long_side <= 4 * MAX_DECODE_SIDE, with_ratio(4))],
                       default=with_ratio(8))

    def decode_png():
        rgba = tf.cast(tf.io.decode_png(data, channels=4), tf.float32)
        return tf.cast(tf.round(_composite_on_white(rgba)), tf.uint8)

    def decode_other():
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        return tf.ensure_shape(img, [None, None, 3])

    img = tf.cond(is_jpeg, decode_jpeg, lambda: tf.cond(is_png, decode_png, decode_other))
    img = tf.ensure_shape(img, [None, None, 3])
    return tf.image.resize(tf.cast(img, tf.float32), (size, size), antialias=True)


def images_to_rgb(images, size: int):
    """float32 (B, H, W, C in 1/3/4) 0..255 -> (B, size, size, 3), compositing alpha on white."""
    shape = tf.shape(images)
    c = shape[3]
    checks = [
        tf.debugging.Assert(tf.reduce_any(tf.equal(c, [1, 3, 4])),
                            ["images: channels must be 1, 3 or 4, got", c]),
        tf.debugging.Assert(tf.cast(shape[1], tf.int64) * tf.cast(shape[2], tf.int64) <= MAX_PIXELS,
                            ["images: too large:", shape[1], "x", shape[2],
                             f"(limit {MAX_PIXELS} pixels)"]),
        tf.debugging.Assert(tf.logical_and(shape[1] > 0, shape[2] > 0),
                            ["images: height and width must be positive, got", shape]),
    ]
    with tf.control_dependencies(checks):
        images = tf.clip_by_value(tf.identity(images), 0.0, 255.0)
    rgb = tf.case([(tf.equal(c, 1), lambda: tf.tile(images[..., :1], [1, 1, 1, 3])),
                   (tf.equal(c, 4), lambda: _composite_on_white(images[..., :4]))],
                  default=lambda: images[..., :3])
    rgb = tf.ensure_shape(rgb, [None, None, None, 3])
    return tf.image.resize(rgb, (size, size), antialias=True)


class CaptionServer(tf.Module):
    """The exported module: backbone + decoder + vocabulary + beam search.

    Args:
        captioner: the trained :class:`apps.captioning.model.Captioner`.
        vocab: its :class:`apps.captioning.model.Vocabulary`.
        backbone: the :class:`rnnkit.backbones.Backbone` it was trained on.
        beam_width: beam size.
        max_length: most tokens per caption.
        length_penalty: GNMT alpha.
    """

    def __init__(self, captioner, vocab, backbone, beam_width: int = 3, max_length: int = 24,
                 length_penalty: float = 0.6):
        super().__init__(name="captioner")
        self.captioner = captioner
        self.cnn = backbone.model
        # Keras 3 layers keep their tf.Variables behind wrappers; list the backing variables
        # so the SavedModel restores them (TF Serving's loader reads only tracked ones).
        self.model_variables = [w.value for w in captioner.weights + backbone.model.weights]
        self._preprocess = backbone.preprocess
        self.size = int(backbone.image_size)
        self.words = tf.constant(vocab.itos)
        self.beam_width, self.max_length = int(beam_width), int(max_length)
        self.length_penalty = float(length_penalty)
        self.serve_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[tf.TensorSpec([None, None, None, None], tf.float32, name="images")])

    def _caption(self, rgb):
        from apps.captioning.model import decode

        # An empty batch runs one blank picture and returns its outputs sliced to zero rows,
        # so clients get well-formed empty outputs instead of a shape error.
        n = tf.shape(rgb)[0]
        rgb = tf.cond(n > 0, lambda: rgb, lambda: tf.zeros([1, self.size, self.size, 3]))
        grid, pooled = self.cnn(self._preprocess(rgb), training=False)
        grid = tf.reshape(grid, [tf.shape(grid)[0], -1, grid.shape[-1]])
        out = decode(self.captioner, grid, pooled, "beam", self.beam_width, self.max_length,
                     self.length_penalty)
        words = tf.gather(self.words, out.tokens)
        words = tf.where(tf.equal(out.tokens, PAD), tf.constant(""), words)
        captions = tf.strings.strip(tf.strings.reduce_join(words, axis=1, separator=" "))
        return {"captions": captions[:n], "scores": out.scores[:n],
                "lengths": out.lengths[:n], "attention": out.attention[:n]}

    def _serve_bytes(self, image_bytes):
        rgb = tf.map_fn(lambda b: decode_image_bytes(b, self.size), image_bytes,
                        fn_output_signature=tf.TensorSpec([self.size, self.size, 3], tf.float32))
        return self._caption(rgb)

    def _serve_images(self, images):
        return self._caption(images_to_rgb(images, self.size))


def export(output: Path, export_dir: Path, version: int | None = None,
           beam_width: int = 3) -> Path:
    """Exports the trained captioner in ``output`` as ``export_dir/<version>``.

    Args:
        output: the run folder (model.keras, captioner.json, reports/metrics.json).
        export_dir: the export base (``saved_models/captioning``).
        version: the version number (default: next).
        beam_width: beam size baked into the graph.

    Returns:
        The export folder.
    """
    import io
    import json

    from PIL import Image

    from apps.captioning.train import load_trained
    from rnnkit.backbones import get_backbone
    from rnnkit.export import export_saved_model

    model, vocab, cfg = load_trained(output)
    backbone = get_backbone(cfg.get("backbone", "efficientnet_lite0"))
    server = CaptionServer(model, vocab, backbone, beam_width=beam_width,
                           max_length=int(cfg.get("max_len", 24)) + 1)
    metrics_path = Path(output) / "reports" / "metrics.json"
    metrics: dict[str, Any] | None = (json.loads(metrics_path.read_text())
                                      if metrics_path.exists() else None)
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(buf, format="PNG")
    warmup = [{"image_bytes": np.array([buf.getvalue()], dtype=object)}]
    return export_saved_model(
        server, export_dir,
        signatures={"serving_default": server.serve_bytes,
                    "caption_images": server.serve_images},
        version=version, metrics=metrics, warmup_requests=warmup)
