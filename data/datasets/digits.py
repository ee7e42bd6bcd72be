"""scikit-learn's bundled digits (1,797 8x8 gray images, 10 classes): the embedded default.

It ships inside scikit-learn, so `make demo` and the tests run on any fresh
install. There is no official split: a seeded, stratified 50% goes to test.
"""
import numpy as np

from glag.data.datasets.base import ImageSet, RawDataset, register_dataset


@register_dataset("digits")
def load_digits(root=None, seed: int = 0) -> RawDataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]   # (N, 8, 8, 1)
    rng = np.random.default_rng(seed)
    train_rows, test_rows = [], []
    for k in range(10):
        rows = rng.permutation(np.flatnonzero(d.target == k))
        test_rows.append(rows[: len(rows) // 2])
        train_rows.append(rows[len(rows) // 2:])
    tr, te = np.sort(np.concatenate(train_rows)), np.sort(np.concatenate(test_rows))
    return RawDataset(name="digits", class_names=[str(k) for k in range(10)],
                      train=ImageSet(labels=d.target[tr], images=images[tr], index=tr),
                      test=ImageSet(labels=d.target[te], images=images[te], index=te),
                      channels=1, image_size=8)
