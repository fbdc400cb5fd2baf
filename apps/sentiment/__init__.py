"""IMDB review sentiment: a bidirectional Elman RNN blended with an n-gram branch.

Read in order: ``data.py`` (TFDS builders), ``model.py`` (preprocessor + RNN + head),
``ngrams.py`` (the n-gram branch and the blend), ``train.py`` (train; evaluate with the
TF-IDF baselines), ``export.py`` (the SavedModel and how a prediction prints), ``app.py``
(the app's flags and hooks on ``rnnkit.app.App``).
"""
