"""Dataset readers against tiny fixtures written in each documented on-disk format.

The realdata tests read a few members of the archives in ../shared/data and
Debian's dataset-fashion-mnist; they skip (saying why) where those are absent.
"""
import gzip
import io
import json
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glag.data.datasets import DATASETS, load_dataset
from glag.data.datasets import cache as image_cache
from glag.data.errors import GlagError
from glag.data.images import decode_image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def save_image(path, colour, size=8, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), colour).save(path)
    return path


def one_line_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for needle in needles:
        assert str(needle) in msg, msg


# ---------------------------------------------------------------- images
def test_decode_image_converts_and_resizes(tmp_path):
    gray = save_image(tmp_path / "g.png", 77, mode="L")
    rgb = decode_image(gray, 3)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8 and (rgb == 77).all()
    small = decode_image(save_image(tmp_path / "c.bmp", (255, 0, 0)), 1, size=4)
    assert small.shape == (4, 4, 1) and 70 < small[0, 0, 0] < 80      # L = 0.299 R


def test_decode_image_errors_name_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(GlagError) as e:
        decode_image(tmp_path / "bad.jpg", 3)
    one_line_error(e, tmp_path / "bad.jpg")
    with pytest.raises(GlagError) as e:
        decode_image(tmp_path / "gone.jpg", 3)
    one_line_error(e, tmp_path / "gone.jpg", "not found")


# ---------------------------------------------------------------- every reader: missing data
MISSING_OPTIONS = {"fashion-mnist": {"system_dir": None}}


@pytest.mark.parametrize("name", sorted(set(DATASETS) - {"digits"}))
def test_missing_dataset_is_a_one_line_error_naming_the_path(name, tmp_path):
    with pytest.raises(GlagError) as e:
        load_dataset(name, tmp_path, **MISSING_OPTIONS.get(name, {}))
    one_line_error(e, tmp_path)


# ---------------------------------------------------------------- fashion-mnist (IDX)
def write_idx(path, array, magic, gz):
    header = struct.pack(">II", magic, len(array)) + b"".join(struct.pack(">I", d) for d in array.shape[1:])
    data = header + array.astype(np.uint8).tobytes()
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)


def write_fmnist(folder, gz=True, n_per_class=2):
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_per_class), ("t10k", 1)):
        labels = np.repeat(np.arange(10), n)
        images = np.broadcast_to(labels[:, None, None] * 10, (len(labels), 4, 5))
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images, 2051, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, 2049, gz)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx(tmp_path, gz):
    write_fmnist(tmp_path / "fashion-mnist", gz=gz)
    raw = load_dataset("fashion-mnist", tmp_path, system_dir=None)
    assert raw.train.images.shape == (20, 4, 5, 1) and raw.train.images.dtype == np.uint8
    assert raw.test.images.shape == (10, 4, 5, 1) and raw.channels == 1 and raw.image_size == 4
    assert (raw.train.images[:, 0, 0, 0] == raw.train.labels * 10).all()
    assert raw.class_names[0] == "T-shirt/top" and raw.class_names[9] == "Ankle boot" and raw.val is None


def test_fashion_mnist_data_root_wins_over_system_dir(tmp_path):
    write_fmnist(tmp_path / "root" / "fashion-mnist", n_per_class=2)
    write_fmnist(tmp_path / "system", n_per_class=3)
    assert len(load_dataset("fashion-mnist", tmp_path / "root", system_dir=tmp_path / "system").train) == 20
    assert len(load_dataset("fashion-mnist", tmp_path / "none", system_dir=tmp_path / "system").train) == 30


@pytest.mark.parametrize("damage, needle", [("truncate", "truncated"), ("magic", "magic"), ("header", "header")])
def test_fashion_mnist_rejects_damaged_files(tmp_path, damage, needle):
    write_fmnist(tmp_path / "fashion-mnist", gz=False)
    path = tmp_path / "fashion-mnist" / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[:-7], "magic": struct.pack(">I", 2049) + raw[4:], "header": raw[:10]}[damage])
    with pytest.raises(GlagError) as e:
        load_dataset("fashion-mnist", tmp_path, system_dir=None)
    one_line_error(e, path, needle)


def test_fashion_mnist_rejects_broken_gzip(tmp_path):
    write_fmnist(tmp_path / "fashion-mnist", gz=True)
    path = tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(GlagError) as e:
        load_dataset("fashion-mnist", tmp_path, system_dir=None)
    one_line_error(e, path)


# ---------------------------------------------------------------- cifar10 / cifar100 (pickles)
def cifar_batch(path, labels, label_key, py2_numpy=True):
    """A batch as the original files hold it: bytes keys, (N, 3072) R-G-B planes, numpy.core globals."""
    labels = np.asarray(labels)
    planes = np.stack([labels * 10, labels * 10 + 1, labels * 10 + 2], axis=1)          # (N, 3)
    data = np.repeat(planes, 1024, axis=1).astype(np.uint8)                               # (N, 3072)
    blob = pickle.dumps({b"batch_label": b"fixture", b"data": data, label_key: list(map(int, labels))}, protocol=2)
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if py2_numpy else blob)


def test_cifar10_reads_pickled_batches(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for i in range(1, 6):
        cifar_batch(base / f"data_batch_{i}", [i % 10, (i + 3) % 10], b"labels", py2_numpy=i % 2 == 0)
    cifar_batch(base / "test_batch", list(range(10)), b"labels")
    names = [f"class{k}".encode() for k in range(10)]
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    raw = load_dataset("cifar10", tmp_path)
    assert raw.train.images.shape == (10, 32, 32, 3) and raw.train.images.dtype == np.uint8
    assert raw.train.labels.tolist() == [1, 4, 2, 5, 3, 6, 4, 7, 5, 8]
    assert raw.test.images[7, 31, 31].tolist() == [70, 71, 72]          # planes became channels
    assert raw.class_names[3] == "class3" and raw.image_size == 32 and raw.channels == 3


def write_cifar100(base):
    base.mkdir(exist_ok=True)
    cifar_batch(base / "train", [99, 0, 42], b"fine_labels")
    cifar_batch(base / "test", [5], b"fine_labels")
    names = [f"fine{k}".encode() for k in range(100)]
    (base / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": []}))


def test_cifar100_reads_fine_labels(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    raw = load_dataset("cifar100", tmp_path)
    assert raw.train.labels.tolist() == [99, 0, 42] and len(raw.class_names) == 100
    assert raw.test.images.shape == (1, 32, 32, 3) and raw.class_names[99] == "fine99"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cifar_unpickling_refuses_code(tmp_path):
    base = tmp_path / "cifar-100-python"
    marker = tmp_path / "pwned"
    write_cifar100(base)
    (base / "train").write_bytes(pickle.dumps({b"data": _Evil(marker)}))
    with pytest.raises(GlagError) as e:
        load_dataset("cifar100", tmp_path)
    one_line_error(e, base / "train", "refusing")
    assert not marker.exists()


def test_cifar_rejects_truncated_and_malformed(tmp_path):
    base = tmp_path / "cifar-100-python"
    write_cifar100(base)
    (base / "train").write_bytes((base / "train").read_bytes()[:-100])
    with pytest.raises(GlagError) as e:
        load_dataset("cifar100", tmp_path)
    one_line_error(e, base / "train")
    cifar_batch(base / "train", [1, 2], b"labels")             # a CIFAR-10 batch in a CIFAR-100 folder
    with pytest.raises(GlagError) as e:
        load_dataset("cifar100", tmp_path)
    one_line_error(e, base / "train", "fine_labels")


# ---------------------------------------------------------------- cifar10-jpeg (class folders, cached)
def write_jpeg_tree(base, classes=("truck", "cat"), n_train=3, n_test=2, size=32):
    for split, n in (("train", n_train), ("test", n_test)):
        for k, name in enumerate(classes):
            for i in range(n):
                save_image(base / split / name / f"{i:04d}.jpg", COLOURS[k], size=size)


def test_cifar10_jpeg_decodes_and_caches(tmp_path, monkeypatch):
    base = tmp_path / "cifar10-jpeg"
    write_jpeg_tree(base)
    raw = load_dataset("cifar10-jpeg", tmp_path)
    assert raw.class_names == ["cat", "truck"]                      # sorted folder names
    assert raw.train.labels.tolist() == [0, 0, 0, 1, 1, 1] and raw.test.labels.tolist() == [0, 0, 1, 1]
    assert raw.train.images.shape == (6, 32, 32, 3) and raw.train.images.dtype == np.uint8
    assert np.abs(raw.train.images[0].astype(int) - COLOURS[1]).max() < 8   # cat was written green
    assert (base / image_cache.CACHE_NAME).is_file()

    def no_decoding(*a, **k):
        raise AssertionError("decoded although the cache matches")
    monkeypatch.setattr(image_cache, "decode_all", no_decoding)
    again = load_dataset("cifar10-jpeg", tmp_path)
    assert np.array_equal(again.train.images, raw.train.images)
    monkeypatch.undo()

    save_image(base / "train" / "cat" / "0003.jpg", (0, 0, 0))      # a changed dataset is decoded again
    grown = load_dataset("cifar10-jpeg", tmp_path)
    assert len(grown.train) == 7 and grown.train.images[3].max() < 10


def test_jpeg_cache_off_and_corrupt_cache(tmp_path):
    base = tmp_path / "cifar10-jpeg"
    write_jpeg_tree(base, n_train=1, n_test=1)
    load_dataset("cifar10-jpeg", tmp_path, cache=False)
    assert not (base / image_cache.CACHE_NAME).exists()
    (base / image_cache.CACHE_NAME).write_bytes(b"garbage")
    raw = load_dataset("cifar10-jpeg", tmp_path)
    assert raw.train.images.shape == (2, 32, 32, 3)
    assert np.load(base / image_cache.CACHE_NAME)["images_train"].shape == (2, 32, 32, 3)   # rewritten


def test_cifar10_jpeg_rejects_test_only_class(tmp_path):
    base = tmp_path / "cifar10-jpeg"
    write_jpeg_tree(base, n_train=1, n_test=1)
    save_image(base / "test" / "zebra" / "0000.jpg", (1, 2, 3))
    with pytest.raises(GlagError) as e:
        load_dataset("cifar10-jpeg", tmp_path)
    one_line_error(e, base / "test", "zebra")


# ---------------------------------------------------------------- folder (paths)
def test_folder_lists_paths_by_class(tmp_path):
    save_image(tmp_path / "train" / "b" / "x.PNG", COLOURS[0])
    save_image(tmp_path / "train" / "b" / "y.bmp", COLOURS[0])
    save_image(tmp_path / "train" / "a" / "z.jpeg", COLOURS[1])
    (tmp_path / "train" / "a" / "notes.txt").write_text("ignored")
    save_image(tmp_path / "test" / "b" / "t.jpg", COLOURS[0])
    raw = load_dataset("folder", tmp_path, image_size=16)
    assert raw.class_names == ["a", "b"] and raw.train.labels.tolist() == [0, 1, 1]
    assert [p.name for p in raw.train.paths] == ["z.jpeg", "x.PNG", "y.bmp"] and raw.train.images is None
    assert raw.test.labels.tolist() == [1] and raw.val is None and raw.image_size == 16
    assert decode_image(raw.train.paths[1], raw.channels, raw.image_size).shape == (16, 16, 3)
    save_image(tmp_path / "val" / "a" / "v.jpg", COLOURS[1])
    assert load_dataset("folder", tmp_path).val.labels.tolist() == [0]


def test_folder_errors(tmp_path):
    save_image(tmp_path / "train" / "a" / "z.jpg", COLOURS[1])
    with pytest.raises(GlagError) as e:
        load_dataset("folder", tmp_path)
    one_line_error(e, tmp_path / "test")
    save_image(tmp_path / "test" / "q" / "t.jpg", COLOURS[1])
    with pytest.raises(GlagError) as e:
        load_dataset("folder", tmp_path)
    one_line_error(e, "'q'")
    with pytest.raises(GlagError) as e:
        load_dataset("folder", tmp_path, channels=2)
    one_line_error(e, "--channels")


# ---------------------------------------------------------------- tiny-imagenet
def write_tiny(base, wnids=("n02", "n01"), n_train=2):
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids))                  # no final newline, like the original
    (base / "words.txt").write_text("n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\tEgyptian cat\n")
    for k, wnid in enumerate(sorted(wnids)):
        for i in range(n_train):
            mode, colour = ("L", 90) if i == 0 else ("RGB", COLOURS[k])       # some are grayscale
            save_image(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", colour, size=64, mode=mode)
    ann = []
    for i, wnid in enumerate(["n02", "n01", "n02"]):
        save_image(base / "val" / "images" / f"val_{i}.JPEG", COLOURS[2], size=64)
        ann.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")


def test_tiny_imagenet_reads_val_as_test(tmp_path):
    write_tiny(tmp_path / "tiny-imagenet-202")
    raw = load_dataset("tiny-imagenet", tmp_path)
    assert raw.class_names == ["goldfish", "Egyptian cat"]             # sorted wnids, first synonym
    assert raw.train.labels.tolist() == [0, 0, 1, 1] and raw.test.labels.tolist() == [1, 0, 1]
    assert raw.train.images.shape == (4, 64, 64, 3) and raw.test.images.dtype == np.uint8
    gray = raw.train.images[0].astype(int)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert raw.val is None and raw.image_size == 64


def test_tiny_imagenet_resizes_on_request(tmp_path):
    write_tiny(tmp_path / "tiny-imagenet-202")
    full = load_dataset("tiny-imagenet", tmp_path)
    small = load_dataset("tiny-imagenet", tmp_path, image_size=32)       # the cache holds one size: redecoded
    assert small.train.images.shape == (4, 32, 32, 3) and small.image_size == 32
    # plain-colour fixtures: resizing keeps each image's colour (JPEG rounding aside)
    assert np.abs(small.train.images.mean((1, 2)).astype(float) - full.train.images.mean((1, 2))).max() < 3
    with pytest.raises(GlagError, match="--image-size"):
        load_dataset("tiny-imagenet", tmp_path, image_size=4)


def test_tiny_imagenet_errors(tmp_path):
    base = tmp_path / "tiny-imagenet-202"
    write_tiny(base)
    ann = base / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_9.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(GlagError) as e:
        load_dataset("tiny-imagenet", tmp_path)
    one_line_error(e, f"{ann}:4", "n99")
    (base / "wnids.txt").write_text("n01\nn02\nn03\n")
    with pytest.raises(GlagError) as e:
        load_dataset("tiny-imagenet", tmp_path)
    one_line_error(e, base / "train" / "n03")


# ---------------------------------------------------------------- imagenet-lt (lists of paths)
def write_imagenet_lt(base, image_root):
    lists = {"train": ["train/n01/a.JPEG 0", "train/n01/b.JPEG 0", "train/n07/c.JPEG 1"],
             "val": ["val/n07/d.JPEG 1"], "test": ["val/n01/e.JPEG 0", "val/n07/f.JPEG 1"]}
    base.mkdir(parents=True, exist_ok=True)
    for split, lines in lists.items():
        (base / f"ImageNet_LT_{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            save_image(image_root / line.split()[0], COLOURS[0])


def test_imagenet_lt_reads_lists(tmp_path):
    write_imagenet_lt(tmp_path / "imagenet-lt", tmp_path / "imagenet-lt")
    raw = load_dataset("imagenet-lt", tmp_path)
    assert raw.listed_long_tail and raw.class_names == ["n01", "n07"]
    assert raw.train.labels.tolist() == [0, 0, 1] and raw.val.labels.tolist() == [1]
    assert raw.test.paths[1] == tmp_path / "imagenet-lt" / "val" / "n07" / "f.JPEG" and raw.image_size == 224


def test_imagenet_lt_image_root_and_errors(tmp_path):
    lists = tmp_path / "imagenet-lt"
    write_imagenet_lt(lists, tmp_path / "ILSVRC")
    with pytest.raises(GlagError) as e:                                 # images are elsewhere
        load_dataset("imagenet-lt", tmp_path)
    one_line_error(e, lists / "train" / "n01" / "a.JPEG", "image_root")
    raw = load_dataset("imagenet-lt", tmp_path, image_root=str(tmp_path / "ILSVRC"))
    assert raw.train.paths[0] == tmp_path / "ILSVRC" / "train" / "n01" / "a.JPEG"
    (lists / "ImageNet_LT_val.txt").write_text("val/n07/d.JPEG\n")
    with pytest.raises(GlagError) as e:
        load_dataset("imagenet-lt", tmp_path, image_root=str(tmp_path / "ILSVRC"))
    one_line_error(e, f"{lists / 'ImageNet_LT_val.txt'}:1")


# ---------------------------------------------------------------- inat2018 (COCO json)
def write_inat(base, val_category=9):
    base.mkdir(parents=True)
    cats = [{"id": 9, "name": "Zea mays"}, {"id": 2, "name": "Homo sapiens"}, {"id": 5, "name": "Canis lupus"}]
    train = {"images": [{"id": i, "file_name": f"train_val2018/x/{i}.jpg"} for i in range(4)],
             "annotations": [{"image_id": i, "category_id": c} for i, c in enumerate([9, 2, 5, 2])],
             "categories": cats}
    val = {"images": [{"id": 10, "file_name": "train_val2018/x/10.jpg"}],
           "annotations": [{"image_id": 10, "category_id": val_category}], "categories": cats}
    (base / "train2018.json").write_text(json.dumps(train))
    (base / "val2018.json").write_text(json.dumps(val))
    save_image(base / "train_val2018" / "x" / "0.jpg", COLOURS[0])


def test_inat_maps_category_ids_and_uses_val_as_test(tmp_path):
    write_inat(tmp_path / "inat2018")
    raw = load_dataset("inat2018", tmp_path)
    assert raw.class_names == ["Homo sapiens", "Canis lupus", "Zea mays"]   # ids 2, 5, 9 -> 0, 1, 2
    assert raw.train.labels.tolist() == [2, 0, 1, 0] and raw.listed_long_tail
    assert raw.val.labels.tolist() == [2] and raw.test is raw.val
    assert raw.train.paths[3] == tmp_path / "inat2018" / "train_val2018" / "x" / "3.jpg"


def test_inat_errors(tmp_path):
    write_inat(tmp_path / "inat2018", val_category=77)
    with pytest.raises(GlagError) as e:
        load_dataset("inat2018", tmp_path)
    one_line_error(e, tmp_path / "inat2018" / "val2018.json", "77")
    (tmp_path / "inat2018" / "train2018.json").write_text("{not json")
    with pytest.raises(GlagError) as e:
        load_dataset("inat2018", tmp_path)
    one_line_error(e, tmp_path / "inat2018" / "train2018.json", "JSON")


# ---------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_digits():
    raw = load_dataset("digits")
    assert raw.train.images.shape[1:] == (8, 8, 1) and len(raw.train) + len(raw.test) == 1797
    assert raw.train.images.max() == 255 and len(raw.class_names) == 10


@pytest.mark.realdata
@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason=f"{DEBIAN_FMNIST} absent: apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist(tmp_path):
    raw = load_dataset("fashion-mnist", tmp_path)                      # empty root: falls back to Debian's copy
    assert raw.train.images.shape == (60000, 28, 28, 1) and raw.test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(raw.train.labels).tolist() == [6000] * 10
    assert np.bincount(raw.test.labels).tolist() == [1000] * 10


def stream_members(archive, dest, keep, stop):
    """Stream `archive`, writing the files keep(name) accepts under dest, until stop(name)."""
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            if stop(member.name):
                break
            if member.isfile() and keep(member.name):
                tar.extract(member, dest, filter="data")


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "cifar10-jpeg.tar.gz").is_file(),
                    reason="../shared/data/cifar10-jpeg.tar.gz absent")
def test_real_cifar10_jpeg_two_classes(tmp_path):
    wanted = ("airplane", "automobile")

    def keep(name):                                     # cifar10-jpeg/<split>/<class>/NN00.jpg, NN01.jpg
        parts = name.split("/")
        return len(parts) == 4 and parts[2] in wanted and name.endswith(("00.jpg", "01.jpg"))
    stream_members(SHARED_DATA / "cifar10-jpeg.tar.gz", tmp_path, keep, stop=lambda n: "train/bird/" in n)
    raw = load_dataset("cifar10-jpeg", tmp_path, cache=False)
    assert raw.class_names == list(wanted) and raw.train.images.shape == (200, 32, 32, 3)
    assert np.bincount(raw.test.labels).tolist() == [20, 20]
    first = tmp_path / "cifar10-jpeg" / "train" / "airplane" / "0000.jpg"
    assert np.array_equal(raw.train.images[0], decode_image(first, 3)) and raw.train.images.std() > 10


def tar_from(data: bytes, member: str) -> tarfile.TarFile:
    """A tarfile reading the uncompressed tar `data` from `member`'s header on.

    Jumping there skips parsing ~100k headers in Python (seconds) to reach the
    end of Tiny-ImageNet's archive, where its val labels are stored.
    """
    offset = data.find(member.encode() + b"\0")
    assert offset >= 0 and offset % 512 == 0, f"{member} is not a member header"
    return tarfile.open(fileobj=io.BytesIO(data[offset:]), mode="r|")


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "tiny-imagenet-202.tar.gz").is_file(),
                    reason="../shared/data/tiny-imagenet-202.tar.gz absent")
def test_real_tiny_imagenet_two_classes(tmp_path):
    wnids = ("n01443537", "n01629819")                                 # the archive's first two classes
    root = tmp_path / "tiny-imagenet-202"
    data = gzip.decompress((SHARED_DATA / "tiny-imagenet-202.tar.gz").read_bytes())   # ~300 MB, one second
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) > 2 and parts[2] not in wnids:
                break
            if member.isfile() and member.name.endswith(("_1.JPEG", "_2.JPEG")):
                tar.extract(member, tmp_path, filter="data")
    val_images = {}
    with tar_from(data, "tiny-imagenet-202/val/") as tar:
        for member in tar:
            if "/val/images/" in member.name and member.isfile():
                val_images[Path(member.name).name] = tar.extractfile(member).read()   # labels come later
            elif member.isfile():
                tar.extract(member, tmp_path, filter="data")
    (root / "wnids.txt").write_text("\n".join(wnids))
    ann = root / "val" / "val_annotations.txt"
    lines = [line for line in ann.read_text().splitlines() if line.split("\t")[1] in wnids]
    ann.write_text("".join(line + "\n" for line in lines))
    (root / "val" / "images").mkdir(parents=True)
    for name in (line.split("\t")[0] for line in lines):
        (root / "val" / "images" / name).write_bytes(val_images[name])
    raw = load_dataset("tiny-imagenet", tmp_path, cache=False)
    assert raw.class_names[0] == "goldfish" and len(raw.class_names) == 2
    assert raw.train.images.shape == (4, 64, 64, 3) and raw.train.labels.tolist() == [0, 0, 1, 1]
    assert np.bincount(raw.test.labels).tolist() == [50, 50] and raw.test.images.std() > 10
