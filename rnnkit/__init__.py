"""rnnkit: plain Elman recurrent networks in Keras, and four apps built on them."""

from rnnkit.layers import SimpleRecurrentCell, SimpleRecurrentLayer

__version__ = "0.1.0"

__all__ = ["SimpleRecurrentCell", "SimpleRecurrentLayer", "__version__"]
