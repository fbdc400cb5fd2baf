"""The serving graph: encoded image bytes (or float images) in, captions and scores out.

Everything runs inside the SavedModel with core TensorFlow ops: format sniffing, a size
guard read from the file header, decoding, alpha compositing, resizing, the frozen CNN,
and beam search (``rnnkit.samplers``) over the recurrent decoder.

Signatures
----------
``serving_default`` (input ``image_bytes``: string ``[B]``) and ``caption_images`` (input
``images``: float32 ``[B, H, W, C]`` with values 0..255, ``C`` in 1, 3, 4). Both return
``captions`` (string ``[B]``), ``scores`` (float32 ``[B]``, length-normalised
log-probability), ``lengths`` (int32 ``[B]``) and ``attention`` (float32 ``[B, T, cells]``:
attention weights over the CNN's grid per generated word; 49 cells, 7x7, for Lite0).

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
* A float ``images`` batch holding a NaN is refused ("images: image contains NaN");
  infinities are clipped to 0..255 like every other value.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from rnnkit.app import LoadedExport, Run, Servable
from rnnkit.export import ServingModule
from rnnkit.modeling.vocabulary import PAD, Vocabulary

from .grammar import fix_articles
from .model import Captioner, decode
from .train import load_trained

__all__ = ["CaptionServer", "decode_image_bytes", "images_to_rgb", "predict", "servable"]

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
        (f"pixels is too large (limits: JPEG {MAX_JPEG_SIDE} px a side, decoded downscaled; "
         f"PNG/GIF/BMP {MAX_PIXELS} pixels)")])
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
        # Clipping below would pass a NaN through to the CNN and answer with a caption.
        tf.debugging.Assert(tf.logical_not(tf.reduce_any(tf.math.is_nan(images))),
                            ["images: image contains NaN"]),
    ]
    with tf.control_dependencies(checks):
        images = tf.clip_by_value(tf.identity(images), 0.0, 255.0)
    rgb = tf.case([(tf.equal(c, 1), lambda: tf.tile(images[..., :1], [1, 1, 1, 3])),
                   (tf.equal(c, 4), lambda: _composite_on_white(images[..., :4]))],
                  default=lambda: images[..., :3])
    rgb = tf.ensure_shape(rgb, [None, None, None, 3])
    return tf.image.resize(rgb, (size, size), antialias=True)


class CaptionServer(ServingModule):
    """The exported module: backbone + decoder + vocabulary + beam search.

    Each weight is saved once (:class:`rnnkit.export.ServingModule`).

    Args:
        captioner: the trained :class:`.model.Captioner`.
        vocab: its vocabulary.
        backbone: the :class:`rnnkit.backbones.Backbone` it was trained on.
        beam_width: beam size.
        max_length: most tokens per caption.
        length_penalty: GNMT alpha.
    """

    def __init__(self, captioner: Captioner, vocab: Vocabulary, backbone, beam_width: int = 3,
                 max_length: int = 24, length_penalty: float = 0.6):
        super().__init__({"captioner": captioner, "cnn": backbone.model}, name="captioner")
        self._preprocess = backbone.preprocess
        self.size = int(backbone.image_size)
        self.words = tf.constant(vocab.itos)
        self.beam_width, self.max_length = int(beam_width), int(max_length)
        self.length_penalty = float(length_penalty)

    def _caption(self, rgb):
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
        # "a"/"an" agreement in the graph: the prior's nouns follow whatever article the
        # generator chose (apps/captioning/grammar.py); word count and attention unchanged.
        captions = fix_articles(captions)
        return {"captions": captions[:n], "scores": out.scores[:n],
                "lengths": out.lengths[:n], "attention": out.attention[:n]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(self, image_bytes):
        rgb = tf.map_fn(lambda b: decode_image_bytes(b, self.size), image_bytes,
                        fn_output_signature=tf.TensorSpec([self.size, self.size, 3], tf.float32))
        return self._caption(rgb)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32,
                                                name="images")])
    def serve_images(self, images):
        return self._caption(images_to_rgb(images, self.size))


def _warmup_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def servable(run: Run) -> Servable:
    """The ``export`` verb's module: the trained decoder, its backbone and beam search
    (``--beam-width``) in one graph."""
    from rnnkit.backbones import get_backbone

    model, vocab, summary = load_trained(run)
    backbone = get_backbone(summary["backbone"])
    server = CaptionServer(model, vocab, backbone, beam_width=run.beam_width,
                           max_length=int(summary["max_len"]) + 1)
    return Servable(server, {"serving_default": server.serve_bytes,
                             "caption_images": server.serve_images},
                    warmup=[{"image_bytes": np.array([_warmup_png()], dtype=object)}])


def predict(run: Run, export: LoadedExport, files: list[str]) -> Iterator[str]:
    """One line per picture: ``path<TAB>caption<TAB>score``.

    Each picture is its own request, so a file the export refuses (not an image, corrupt,
    too large) prints its error on stderr and the others are still captioned.

    Args:
        export: the loaded export.
        files: image files.
        plot: a folder for ``<name>.caption.png`` (the picture, caption and attention maps).
    """
    plot = run.get("plot")
    from rnnkit.app import graph_error_message

    fn = export.signature("serving_default")
    for name in files:
        path = Path(name)
        raw = path.read_bytes()
        try:
            out = fn(image_bytes=tf.constant([raw]))
        except tf.errors.InvalidArgumentError as exc:
            print(f"{path}\terror: {graph_error_message(exc)}", file=sys.stderr)
            continue
        caption = out["captions"].numpy()[0].decode()
        score = float(out["scores"].numpy()[0])
        yield f"{path}\t{caption}\t{score:.3f}"
        if plot:
            from .figures import plot_prediction

            img = tf.io.decode_image(raw, channels=3, expand_animations=False).numpy()
            n = int(out["lengths"].numpy()[0])
            att = out["attention"].numpy()[0][: max(n, 1)]
            target = Path(plot) / f"{path.stem}.caption.png"
            plot_prediction(np.asarray(img), caption, target, attention=att, score=score)
            yield f"  plot: {target}"
