"""The distribution's name and its optional extras, and the install hint every message prints.

The import name is `glag`; the distribution is `glag-lt`, because `glag` on the package index is
an unrelated project (installing the name `glag` from the index would install it, and its extras
with -U would replace this one with it). A hint installs the missing package itself, which is what the extra adds.
pyproject.toml's [project.optional-dependencies] must match EXTRAS (tests/test_packaging.py checks).
"""
DISTRIBUTION = "glag-lt"
EXTRAS = {"plots": "matplotlib>=3.6", "dask": "dask[distributed]>=2023", "tensorboard": "tensorboard>=2.10"}


def install_hint(extra: str) -> str:
    """`pip install '<requirement>'` for an extra: pip install 'tensorboard>=2.10' (the glag-lt[tensorboard] extra)."""
    return f"pip install '{EXTRAS[extra]}' (the {DISTRIBUTION}[{extra}] extra)"
