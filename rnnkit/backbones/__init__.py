"""Frozen image backbones for the captioning app (and anyone else needing image features).

``efficientnet_lite0`` is rebuilt in Keras and loads its real ImageNet weights offline (see
:mod:`rnnkit.backbones.efficientnet_lite`). :func:`get_backbone` also offers any
``keras.applications`` model by name for users with internet access (its weights download
from Google's servers on first use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from rnnkit.backbones.efficientnet_lite import (
    build_efficientnet_lite0,
    efficientnet_lite0,
    read_legacy_torch_checkpoint,
)

__all__ = [
    "KERAS_APPLICATIONS",
    "Backbone",
    "build_efficientnet_lite0",
    "efficientnet_lite0",
    "get_backbone",
    "read_legacy_torch_checkpoint",
]

DEFAULT_BACKBONE = "efficientnet_lite0"

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


def get_backbone(name: str = DEFAULT_BACKBONE) -> Backbone:
    """Returns a frozen backbone by name.

    Args:
        name: ``"efficientnet_lite0"`` (default, offline ImageNet weights) or one of
            :data:`KERAS_APPLICATIONS` (weights downloaded by Keras: needs internet).

    Raises:
        ValueError: for an unknown name.
    """
    if name == DEFAULT_BACKBONE:
        from rnnkit.backbones.efficientnet_lite import IMAGE_SIZE, preprocess

        model = efficientnet_lite0(outputs="both")
        model.trainable = False
        return Backbone(name, model, preprocess, IMAGE_SIZE)
    if name not in KERAS_APPLICATIONS:
        raise ValueError(
            f"unknown backbone {name!r}; choose {DEFAULT_BACKBONE} or one of "
            f"{', '.join(sorted(KERAS_APPLICATIONS))}")
    ctor, module, size = KERAS_APPLICATIONS[name]
    base = getattr(keras.applications, ctor)(include_top=False, weights="imagenet",
                                             input_shape=(size, size, 3))
    base.trainable = False
    grid = base.output
    pooled = keras.layers.GlobalAveragePooling2D()(grid)
    model = keras.Model(base.input, (grid, pooled), name=name)
    preprocess_fn = getattr(keras.applications, module).preprocess_input
    return Backbone(name, model, lambda x: preprocess_fn(keras.ops.cast(x, "float32")), size)
