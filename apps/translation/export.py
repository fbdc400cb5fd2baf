"""Serving export: Spanish strings in, English strings out, everything inside the graph.

Signatures (``saved_models/translation/<N>/``):

``serving_default``
    input ``text``: string ``[B]`` -> ``translation`` string ``[B]``, ``score`` float ``[B]``
    (length-normalised log-probability of the beam), ``token_scores`` float ``[B, T]``
    (log-probability of each output token; 0 after the end).
``attention``
    input ``text`` -> ``translation``, ``source_tokens`` string ``[B, S]`` (``<end>`` closes
    each source), ``output_tokens`` string ``[B, T]`` and ``attention`` float ``[B, T, S]``.

Defined answers: an empty (or all-blank) input gives ``""``; inputs are cut to 200
tokens and outputs to ``2 * words + 10`` (at most 300) tokens; invalid UTF-8 is replaced
with U+FFFD; words the model does not know (any script) are copied from the source.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from rnnkit.app import LoadedExport, Run, Servable
from rnnkit.export import ServingModule

from .figures import plot_attention
from .model import (
    BEAM_WIDTH,
    LENGTH_PENALTY,
    REPEAT_PENALTY,
    TextCodec,
    Translator,
    make_translate_fn,
)
from .train import load_trained

#: Keys of reports/metrics.json kept in the export's card.
METRICS_KEYS = ("app", "data", "test_pairs", "greedy", "beam", "translation_memory",
                "short_segments", "one_word_strings", "parameters")
WARMUP_TEXTS = ["Abre un documento nuevo.", "Vaya a Ver ▸ Barra de herramientas"]


class TranslationServing(ServingModule):
    """The exported module: the trained network, the codec tables and two signatures.

    Args:
        model: the trained translator.
        codec: its codec (its lookup tables are tracked with the module).
        beam_width: beam search width.
        length_penalty: GNMT alpha.
        repeat_penalty: log-probability paid per repeated content word.
    """

    def __init__(self, model: Translator, codec: TextCodec, beam_width: int = BEAM_WIDTH,
                 length_penalty: float = LENGTH_PENALTY,
                 repeat_penalty: float = REPEAT_PENALTY) -> None:
        super().__init__({"model": model}, name="translation")
        self.codec = codec
        self._translate = make_translate_fn(model, codec, beam_width, length_penalty,
                                            repeat_penalty)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        res = self._translate(text)
        return {"translation": res["translation"], "score": res["score"],
                "token_scores": res["token_scores"]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_attention(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        res = self._translate(text)
        words = self.codec.words(res["tokens"], res["lengths"], res["source_tokens"],
                                 res["attention"])
        return {"translation": res["translation"], "source_tokens": res["source_tokens"],
                "output_tokens": words, "attention": res["attention"]}


def servable(run: Run) -> Servable:
    """The ``export`` verb's module for the trained model of ``run``."""
    model, codec = load_trained(run)
    module = TranslationServing(model, codec)
    return Servable(module, {"serving_default": module.serve,
                             "attention": module.serve_attention},
                    warmup=[{"text": np.array(WARMUP_TEXTS, dtype=object)}],
                    metrics_keys=METRICS_KEYS)


def predict(run: Run, export: LoadedExport, texts: list[str]) -> Iterator[str]:
    """One line per text: the translation and its score; optionally the attention heat
    map of the first text."""
    plot = run.get("plot")
    fn = export.signature()
    out = fn(text=tf.constant(texts))
    for translation, score in zip(out["translation"].numpy(), out["score"].numpy()):
        yield f"{translation.decode('utf-8')}\t(score {score:.3f})"
    if plot:
        att = export.signature("attention")(text=tf.constant(texts[:1]))
        source = [t.decode() for t in att["source_tokens"][0].numpy() if t]
        words = [t.decode() for t in att["output_tokens"][0].numpy() if t]
        weights = np.asarray(att["attention"][0])[: len(words), : len(source)]
        plot_attention(source, words, weights, plot,
                       title=att["translation"][0].numpy().decode())
        yield f"attention heatmap: {plot}"
