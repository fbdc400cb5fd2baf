"""rnnkit: plain Elman recurrent networks in Keras, and four apps built on them.

``rnnkit.SimpleRecurrentLayer`` and ``rnnkit.SimpleRecurrentCell`` import TensorFlow when
first used, so the command line can set TensorFlow's log level before that happens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["SimpleRecurrentCell", "SimpleRecurrentLayer", "__version__"]

if TYPE_CHECKING:
    from rnnkit.layers import SimpleRecurrentCell, SimpleRecurrentLayer


def __getattr__(name: str) -> Any:
    if name in ("SimpleRecurrentCell", "SimpleRecurrentLayer"):
        from rnnkit import layers

        return getattr(layers, name)
    raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")
