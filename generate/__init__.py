"""The Adaptive Feature Generator (paper §4.2): moments, supports, calibrated sampling, the synthetic store."""
