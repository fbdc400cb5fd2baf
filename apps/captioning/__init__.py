"""Image captioning: frozen EfficientNet-Lite features -> an Elman RNN decoder with attention.

Verbs: ``rnnkit captioning prepare|train|evaluate|predict|export`` (or
``python -m apps.captioning ...``); the app is :class:`.app.CaptioningApp`. See
docs/captioning.md.
"""
