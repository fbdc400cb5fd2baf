"""Recurrent layers shipped by rnnkit."""

from rnnkit.layers._fused import xla_loops
from rnnkit.layers.simple_recurrent import SimpleRecurrentCell, SimpleRecurrentLayer

__all__ = ["SimpleRecurrentCell", "SimpleRecurrentLayer", "xla_loops"]
