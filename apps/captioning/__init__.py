"""Image captioning: frozen EfficientNet-Lite0 features -> an Elman RNN decoder with attention.

Verbs: ``python -m apps.captioning prepare|train|evaluate|predict|export`` (or
``rnnkit captioning ...``). See docs/captioning.md.
"""
