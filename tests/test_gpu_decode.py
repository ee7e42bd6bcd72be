"""The batched JPEG decoder (glag.extract.gpu_decode), run on the CPU: same images as the Pillow path up to
resampling rounding, Pillow for the files it should not or cannot take, one-line errors naming bad files."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from glag.data.datasets.base import ImageSet
from glag.data.errors import GlagError
from glag.data.images import decode_image
from glag.extract import gpu_decode
from glag.extract.checkpoint import check_compatible
from glag.extract.gpu_decode import decode_batch, decode_mode, gpu_decodable, pack, read_encoded, unpack
from glag.extract.loaders import Images

CPU = torch.device("cpu")
JPEGS = ("color", "gray", "progressive", "small", "444")      # what the batched decoder takes
OTHERS = ("png", "cmyk")                                       # what goes to Pillow


def _pixels(h, w, seed):
    """A smooth picture with some noise: JPEG-like content (pure noise would be all rounding)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([x, y, 1 - x * y], -1) * 200 + 20
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> path of small image files of every kind the readers meet."""
    root = tmp_path_factory.mktemp("imgs")
    img = Image.fromarray(_pixels(45, 60, 0))
    out = {name: root / f"{name}.jpg" for name in (*JPEGS, "cmyk", "truncated")}
    img.save(out["color"], quality=90)                                     # 4:2:0, baseline
    img.convert("L").save(out["gray"], quality=90)
    img.save(out["progressive"], quality=90, progressive=True)
    Image.fromarray(_pixels(20, 17, 1)).save(out["small"], quality=90)     # upscaled to the size
    img.save(out["444"], quality=90, subsampling=0)
    img.convert("CMYK").save(out["cmyk"], quality=90)
    out["png"] = root / "png.png"
    img.save(out["png"])
    out["truncated"].write_bytes(out["color"].read_bytes()[:400])          # header intact, data cut
    return out


def _batch(paths, channels, size, counts=None):
    return decode_batch(unpack(pack([read_encoded(p) for p in paths])), channels, size, CPU, counts).numpy()


def test_the_screen_sends_only_plain_jpegs_to_the_batched_decoder(files):
    assert all(gpu_decodable(files[n].read_bytes()) for n in JPEGS)
    assert not any(gpu_decodable(files[n].read_bytes()) for n in OTHERS)
    assert gpu_decodable(files["truncated"].read_bytes())           # its header is whole: the decoder must refuse it
    color = files["color"].read_bytes()
    adobe_rgb = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"       # APP14, transform 0: RGB-coded
    assert not gpu_decodable(color[:2] + adobe_rgb + color[2:])
    assert not gpu_decodable(b"") and not gpu_decodable(b"\xff\xd8\xff\xe0garbage")


def test_a_batch_travels_as_one_tensor_and_unpacks_to_the_files(files, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    items = [read_encoded(p) for p in (files["color"], tmp_path / "empty.jpg", files["png"])]
    packed = pack(items)
    assert packed["blob"].dtype == torch.uint8 and packed["blob"].dim() == 1
    assert [(p, bytes(t.numpy()), ok) for p, t, ok in unpack(packed)] == items
    assert [ok for _, _, ok in items] == [True, False, False]


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("size", [37, 45, 80])               # shrink, one side kept, enlarge
def test_batched_decode_matches_the_pillow_path(files, channels, size):
    paths = [files[n] for n in JPEGS]
    counts = {}
    got = _batch(paths, channels, size, counts)
    want = np.stack([decode_image(p, channels, size) for p in paths])
    assert got.shape == want.shape == (len(paths), size, size, channels) and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want)
    assert diff.max() <= 1 and diff.mean() < 0.3, (diff.max(), diff.mean())   # resampling rounding only
    assert counts == {"gpu": len(paths), "cpu": 0}


def test_luma_is_pillows_formula_exactly(files):
    rgb = decode_image(files["color"], 3).copy()             # writable, for torch
    got = gpu_decode.to_luma(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0, 0].numpy()
    np.testing.assert_array_equal(got, np.asarray(Image.fromarray(rgb).convert("L")))


@pytest.mark.parametrize("channels", [3, 1])
def test_other_files_are_decoded_by_pillow_as_on_the_cpu_path(files, channels):
    paths = [files["color"], files["png"], files["cmyk"]]
    counts = {}
    got = _batch(paths, channels, 32, counts)
    for i in (1, 2):
        np.testing.assert_array_equal(got[i], decode_image(paths[i], channels, 32))
    assert counts == {"gpu": 1, "cpu": 2}


def test_a_file_the_decoder_rejects_falls_back_to_pillow(files, monkeypatch):
    """nvJPEG refuses a whole batch for one file it cannot take: the others still decode in batch."""
    rejected = files["progressive"].read_bytes()
    real = gpu_decode._decode

    def picky(blobs, device):
        if any(blob.numpy().tobytes() == rejected for blob in blobs):
            raise RuntimeError("nvjpeg: unsupported stream")
        return real(blobs, device)
    monkeypatch.setattr(gpu_decode, "_decode", picky)
    paths = [files["color"], files["progressive"], files["gray"]]
    counts = {}
    got = _batch(paths, 3, 32, counts)
    np.testing.assert_array_equal(got[1], decode_image(files["progressive"], 3, 32))
    assert counts == {"gpu": 2, "cpu": 1}


def test_a_file_neither_decoder_reads_is_named_in_one_line(files):
    with pytest.raises(GlagError) as err:
        _batch([files["color"], files["truncated"]], 3, 32)
    message = str(err.value)
    assert str(files["truncated"]) in message and "replace or remove" in message and "\n" not in message


def test_decode_mode(monkeypatch):
    assert decode_mode("auto", "cpu") == "cpu" and decode_mode("cpu", "cpu") == "cpu"
    for option, needle in (("gpu", "--decode gpu"), ("nvdec", "--decode 'nvdec'")):
        with pytest.raises(GlagError, match=needle):
            decode_mode(option, "cpu")
    # a CUDA device whose torchvision has no nvJPEG: auto falls back, gpu says so
    monkeypatch.setattr(gpu_decode, "nvjpeg_problem", lambda device: "not compiled with nvJPEG support")
    assert decode_mode("auto", "cuda") == "cpu"
    with pytest.raises(GlagError, match="--decode gpu: torchvision cannot decode"):
        decode_mode("gpu", "cuda")
    monkeypatch.setattr(gpu_decode, "nvjpeg_problem", lambda device: None)
    assert decode_mode("auto", "cuda") == "gpu" and decode_mode("cpu", "cuda") == "cpu"


def _split(paths):
    return ImageSet(labels=np.arange(len(paths)) % 2, paths=list(paths))


@pytest.mark.parametrize("workers", [0, 1])
def test_images_gives_the_same_batches_either_way(files, workers):
    split = _split([files[n] for n in (*JPEGS, *OTHERS)] * 2)
    batches = list(torch.arange(len(split)).split(4))
    cpu = Images(split, 3, 40, workers=workers)
    gpu = Images(split, 3, 40, workers=workers, decode="gpu", device=CPU)
    for (a, ya, ia), (b, yb, ib) in zip(cpu.batches(batches), gpu.batches(batches), strict=True):
        assert a.shape == b.shape and (a.int() - b.int()).abs().max() <= 1
        assert torch.equal(ya, yb) and torch.equal(ia, ib)
    assert gpu.decoded == {"gpu": 10, "cpu": 4}
    assert gpu.preload(64) and gpu.images.shape == (len(split), 40, 40, 3) and gpu.images.device == CPU


@pytest.mark.parametrize("name, needle", [("truncated", "replace or remove"), ("missing", "image file not found")])
def test_images_names_a_bad_file_as_the_cpu_path_does(files, name, needle):
    bad = files[name] if name in files else files["color"].with_name("missing.jpg")
    images = Images(_split([files["color"], bad]), 3, 32, decode="gpu", device=CPU)
    with pytest.raises(GlagError) as err:
        list(images.batches([torch.arange(2)]))
    assert str(bad) in str(err.value) and needle in str(err.value) and "\n" not in str(err.value)


def test_decode_gpu_without_cuda_is_one_line_and_decode_is_a_runtime_key(tmp_path):
    from glag.extract.cli import main
    saved = {"epochs": 3, "decode": "cpu"}
    check_compatible(tmp_path / "b.ckpt.pt", saved, dict(saved, decode="gpu"))   # resumes across decoders
    check_compatible(tmp_path / "b.ckpt.pt", {"epochs": 3}, saved)                # and from older checkpoints
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = CliRunner().invoke(main, ["--dataset", "digits", "--decode", "gpu", "--out", str(tmp_path / "b.h5")])
    assert res.exit_code == 2 and res.output.count("Error:") == 1 and "'--decode'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "b.h5").exists()


def test_the_benchmark_runs_dry_on_the_cpu(tmp_path):
    from bench import bench_decode          # the repository root is on pytest's path; bench/ is a namespace
    res = CliRunner().invoke(bench_decode.main, ["--dry-run", "--out", str(tmp_path / "bench")])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "bench" / "decode.json").read_text())
    assert set(result["rates"]) == {"gpu", "cpu"} and result["dry_run"] is True
    for rates in result["rates"].values():
        assert rates["decode_images_per_s"] > 0 and rates["train_images_per_s"] > 0
    assert result["rates"]["gpu"]["decoded"]["gpu"] > 0
    assert "| decode path |" in (tmp_path / "bench" / "decode.md").read_text()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the device check runs it)")
def test_on_cuda_nvjpeg_matches_pillow_and_names_bad_files(files):
    """nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's: a few grey levels are allowed."""
    assert decode_mode("auto", "cuda") == "gpu"
    paths = [files[n] for n in (*JPEGS, *OTHERS)]
    counts = {}
    got = decode_batch(unpack(pack([read_encoded(p) for p in paths])), 3, 37, "cuda", counts)
    assert got.device.type == "cuda" and counts == {"gpu": len(JPEGS), "cpu": len(OTHERS)}
    diff = np.abs(got.cpu().numpy().astype(int) - np.stack([decode_image(p, 3, 37) for p in paths]))
    assert diff.max() <= 8 and diff.mean() < 1.0, (diff.max(), diff.mean())
    with pytest.raises(GlagError, match="truncated.jpg"):            # nvJPEG must refuse it, not half-decode it
        decode_batch(unpack(pack([read_encoded(files["truncated"])])), 3, 37, "cuda")


def test_stage_one_trains_and_dumps_through_the_batched_path(tmp_path, monkeypatch):
    """The whole of glag-extract on a folder of JPEGs with every split decoded by the batched path (on the CPU)."""
    from glag.data.bank import Bank
    from glag.extract import pipeline
    from glag.extract.cli import main
    made = []

    def batched(*args, **kwargs):
        made.append(Images(*args, **{**kwargs, "decode": "gpu", "device": CPU}))
        return made[-1]
    monkeypatch.setattr(pipeline, "Images", batched)
    for split, per_class in (("train", (8, 4)), ("test", (3, 3))):
        for k, n in enumerate(per_class):
            (tmp_path / "imgs" / split / f"c{k}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_pixels(30, 40, 10 * k + i)).save(tmp_path / "imgs" / split / f"c{k}" / f"{i}.jpg")
    out = tmp_path / "bank.h5"
    res = CliRunner().invoke(main, [
        "--dataset", "folder", "--data-root", str(tmp_path / "imgs"), "--image-size", "8", "--backbone",
        "resnet_small", "--epochs", "1", "--batch-size", "4", "--im", "2", "--val-per-class", "1",
        "--workers", "0", "--threads", "1", "--preload-mb", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sum(images.decoded.get("gpu", 0) for images in made) > 0
    with Bank(out) as bank:
        assert bank.rows("test") == 6 and bank.config["decode"] == "auto"
