"""Stage two's choices as plain names, importable without torch or h5py.

`--help`, `--version` and a bad option of glag-generate and glag-classify are answered from
these alone; the modules that implement each choice import their names from here.
"""
GAMMA_MODES = ("isotropic", "all-ones")     # gamma * I, or gamma * 11^T (glag.data.mixing)
STORE_DTYPES = ("float16", "float32")       # the stored factors' type (glag.data.store)
MOMENTS_FROM = ("base", "views")            # the rows class moments are taken over (glag.generate.afg)
