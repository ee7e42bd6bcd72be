"""Stage two: heads trained or calibrated on the cached feature bank (cRT, LWS, tau-norm, NCM,
post-hoc logit adjustment) and GLAG (synthetic tail rows, KD, adaptive beta) -> `glag-classify`."""
