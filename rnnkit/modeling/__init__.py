"""Modelling pieces the apps share (KerasHub's split: preprocessors, backbones, tasks and
samplers are the apps'; the blocks they are built from live here once).

* :mod:`rnnkit.modeling.pooling`: masked max / mean pooling over time.
* :mod:`rnnkit.modeling.attention`: Luong attention of decoder states over keys.
* :mod:`rnnkit.modeling.vocabulary`: one vocabulary layout, with the special-token ids
  (pad, start, end, unknown) every sequence model uses.
* :mod:`rnnkit.modeling.sequence`: masked sequence loss (Keras's ``ignore_class``) and
  accuracy over padded token sequences.
* :mod:`rnnkit.modeling.bleu`: corpus BLEU and chrF on sacrebleu.

Decoding (greedy or beam search, chosen by :func:`rnnkit.samplers.generate`) lives in
:mod:`rnnkit.samplers`.
"""
