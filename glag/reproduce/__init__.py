"""`glag-reproduce`: the whole comparison on one dataset, above the three stages (it runs them as tools)."""
