"""IMDB review sentiment with a bidirectional Elman RNN: data, model, training, export, CLI.

Read in order: ``data.py`` (TFDS builders), ``model.py`` (preprocessor + RNN + head),
``train.py`` (train, evaluate with the TF-IDF baseline), ``export.py`` (SavedModel, predict),
``cli.py`` (the verbs).
"""
