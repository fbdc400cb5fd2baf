"""Spanish -> English translation: Elman encoder-decoder with attention, copying and
in-graph beam search (see docs/translation.md)."""
