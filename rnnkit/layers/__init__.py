"""Recurrent layers shipped by rnnkit."""

from rnnkit.layers.simple_recurrent import SimpleRecurrentCell, SimpleRecurrentLayer

__all__ = ["SimpleRecurrentCell", "SimpleRecurrentLayer"]
