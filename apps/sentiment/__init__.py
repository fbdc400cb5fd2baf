"""IMDB review sentiment with a bidirectional Elman RNN.

Read in order: ``data.py`` (TFDS builders), ``model.py`` (preprocessor + RNN + head),
``train.py`` (train; evaluate with the TF-IDF baseline), ``export.py`` (the SavedModel and
how a prediction prints), ``app.py`` (the app's flags and hooks on ``rnnkit.app.App``).
"""
