"""rnnkit: plain Elman recurrent networks in Keras, and four apps built on them."""

from rnnkit.logs import is_quiet_command, quiet_startup

if is_quiet_command():  # the rnnkit command: TensorFlow's start-up lines only with --verbose
    quiet_startup()

from rnnkit.layers import SimpleRecurrentCell, SimpleRecurrentLayer  # noqa: E402

__version__ = "0.1.0"

__all__ = ["SimpleRecurrentCell", "SimpleRecurrentLayer", "__version__"]
