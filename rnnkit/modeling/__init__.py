"""Modelling pieces the apps share (KerasHub's split: preprocessors, backbones, tasks and
samplers are the apps'; the blocks they are built from live here once).

* :mod:`rnnkit.modeling.pooling`: masked max / mean pooling over time.
"""
