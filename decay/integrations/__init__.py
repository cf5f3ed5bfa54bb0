"""Framework integrations: decay inside PyTorch's and Keras's own training loops.

``decay.torch`` and ``decay.keras`` are these modules; each imports its framework when
first touched, never at ``import decay``.
"""
