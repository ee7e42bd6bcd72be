"""GLAG: long-tailed classification with Gradual Balanced Loss and Adaptive Feature Generation.

The stages live in `glag.data` (datasets, bank and store formats), `glag.extract`
(stage one), `glag.generate` (the AFG) and `glag.classify` (stage two).
"""
__version__ = "0.2.0"
