"""Ecosystem conventions: torchvision's on-disk dataset layouts and `--backbone torchvision:<name>`.

Fixtures are tiny files written in torchvision's layouts; models are built with weights=None (nothing
is downloaded). The end-to-end run trains torchvision's ResNet-18 on digits for one epoch.
"""
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from glag.data.bank import Bank
from glag.data.datasets import load_dataset
from glag.data.errors import GlagError
from glag.extract.backbones import BackboneName, Classifier, build_backbone, is_backbone, load_deployed, load_pretrained
from glag.extract.group import GroupedClassifier
from tests.test_datasets import COLOURS, cifar_batch, one_line_error, save_image, write_fmnist, write_inat


def same_arrays(a, b):
    for split in ("train", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert np.array_equal(x.images, y.images) and np.array_equal(x.labels, y.labels)
    assert a.class_names == b.class_names and a.channels == b.channels and a.image_size == b.image_size


# ---------------------------------------------------------------- torchvision dataset layouts
@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_torchvisions_raw_folder(tmp_path, gz):
    write_fmnist(tmp_path / "ours" / "fashion-mnist", gz=gz)
    write_fmnist(tmp_path / "tv" / "FashionMNIST" / "raw", gz=gz)     # torchvision.datasets.FashionMNIST(root)
    ours = load_dataset("fashion-mnist", tmp_path / "ours", system_dir=None)
    same_arrays(load_dataset("fashion-mnist", tmp_path / "tv", system_dir=None), ours)


def test_fashion_mnist_unknown_folder_lists_the_layouts_looked_for(tmp_path):
    (tmp_path / "FashionMNIST" / "processed").mkdir(parents=True)     # not a layout we read
    with pytest.raises(GlagError) as e:
        load_dataset("fashion-mnist", tmp_path, system_dir=tmp_path / "debian")
    one_line_error(e, tmp_path / "fashion-mnist", tmp_path / "FashionMNIST" / "raw", tmp_path / "debian",
                   "torchvision")


def write_cifar10(base):
    base.mkdir(parents=True)
    for i in range(1, 6):
        cifar_batch(base / f"data_batch_{i}", [i % 10, (i + 3) % 10], b"labels")
    cifar_batch(base / "test_batch", list(range(10)), b"labels")
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % k for k in range(10)]}, protocol=2))


def test_cifar10_reads_torchvisions_root_with_its_archive_beside(tmp_path):
    write_cifar10(tmp_path / "ours" / "cifar-10-batches-py")
    write_cifar10(tmp_path / "tv" / "cifar-10-batches-py")            # torchvision.datasets.CIFAR10(root)
    (tmp_path / "tv" / "cifar-10-python.tar.gz").write_bytes(b"the archive torchvision keeps")
    same_arrays(load_dataset("cifar10", tmp_path / "tv"), load_dataset("cifar10", tmp_path / "ours"))


@pytest.mark.parametrize("name, archive", [("cifar10", "cifar-10-python.tar.gz"),
                                           ("cifar100", "cifar-100-python.tar.gz")])
def test_cifar_archive_only_says_to_extract_it(tmp_path, name, archive):
    (tmp_path / archive).write_bytes(b"not extracted")
    with pytest.raises(GlagError) as e:
        load_dataset(name, tmp_path)
    one_line_error(e, tmp_path / archive, "extract")


def test_inat_finds_images_in_torchvisions_2018_folder(tmp_path):
    write_inat(tmp_path / "inat2018")
    (tmp_path / "inat2018" / "train_val2018" / "x" / "0.jpg").unlink()
    save_image(tmp_path / "2018" / "x" / "0.jpg", COLOURS[0])        # INaturalist(root, "2018") drops train_val2018/
    raw = load_dataset("inat2018", tmp_path)
    assert raw.train.paths[3] == tmp_path / "2018" / "x" / "3.jpg" and raw.test is raw.val
    assert raw.val.paths[0] == tmp_path / "2018" / "x" / "10.jpg"


def test_inat_without_images_anywhere_names_both_places(tmp_path):
    write_inat(tmp_path / "inat2018")
    (tmp_path / "inat2018" / "train_val2018" / "x" / "0.jpg").unlink()
    (tmp_path / "2018").mkdir()
    with pytest.raises(GlagError) as e:
        load_dataset("inat2018", tmp_path)
    one_line_error(e, tmp_path / "inat2018", tmp_path / "2018", "image_root")


# ---------------------------------------------------------------- --backbone torchvision:<name>
# one model per head kind: fc (ResNet, RegNet), classifier Sequential (EfficientNet, ConvNeXt), heads (ViT)
HEADS = [("resnet18", 512), ("regnet_x_400mf", 400), ("efficientnet_b0", 1280), ("convnext_tiny", 768),
         ("vit_b_32", 768)]


@pytest.mark.parametrize("name, dim", HEADS)
def test_torchvision_models_lose_their_head_and_give_non_negative_features(name, dim):
    torch.manual_seed(0)
    model = build_backbone(f"torchvision:{name}", 3, 32)
    feats = model(torch.randn(2, 3, 32, 32))
    assert model.feature_dim == dim and feats.shape == (2, dim) and (feats >= 0).all() and (feats > 0).any()
    assert not any(isinstance(m, torch.nn.Linear) and m.out_features == 1000 for m in model.modules())


def test_gray_images_get_a_one_channel_first_conv():
    model = build_backbone("torchvision:resnet18", 1, 8)               # digits: 8x8 gray
    assert model.conv1.in_channels == 1 and model(torch.randn(2, 1, 8, 8)).shape == (2, 512)


@pytest.mark.filterwarnings("ignore:The default weight initialization of GoogleNet")
@pytest.mark.parametrize("name, needle", [
    ("torchvision:resnet_nope", "no classification model"),
    ("torchvision:fasterrcnn_resnet50_fpn", "no classification model"),   # detection: not a classifier
    ("torchvision:squeezenet1_0", "no linear class head"),
    ("torchvision:googlenet", "auxiliary heads")])
def test_unusable_torchvision_names_are_one_line_errors(name, needle):
    with pytest.raises(GlagError) as e:
        build_backbone(name, 3, 32)
    one_line_error(e, name, needle)
    assert not is_backbone("torchvision:resnet_nope") and is_backbone("torchvision:resnet18")


def test_too_small_images_are_refused_at_build_time():
    with pytest.raises(GlagError) as e:
        build_backbone("torchvision:convnext_tiny", 1, 8)
    one_line_error(e, "8x8", "--image-size")


def test_backbone_option_type_accepts_torchvision_names():
    kind = BackboneName()
    assert kind.convert("torchvision:resnet18", None, None) == "torchvision:resnet18"
    assert kind.convert("resnet32", None, None) == "resnet32"
    for bad in ("torchvision:nope", "nope"):
        with pytest.raises(Exception, match="nope"):
            kind.convert(bad, None, None)


def test_a_torchvision_state_dict_loads_with_pretrained(tmp_path):
    import torchvision
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    missing, unexpected = load_pretrained(build_backbone("torchvision:resnet18", 3, 32), tmp_path / "r18.pth")
    assert missing == [] and unexpected == []                           # fc.* is dropped as a class head


def test_group_module_refuses_torchvision_backbones():
    a, b = (Classifier(build_backbone("torchvision:resnet18", 1, 8), 10) for _ in range(2))
    with pytest.raises(GlagError) as e:
        GroupedClassifier([a, b])
    one_line_error(e, "ResNet", "one at a time")


def test_stage_one_on_digits_with_torchvision_resnet18_deploys(tmp_path):
    from glag.classify.deploy import build_deployed
    from glag.extract.cli import main
    out = tmp_path / "bank.h5"
    result = CliRunner().invoke(main, ["--dataset", "digits", "--epochs", "1", "--threads", "1",
                                       "--backbone", "torchvision:resnet18", "--loss", "ce", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with Bank(out) as bank:
        assert bank.config["backbone"] == "torchvision:resnet18" and bank.feature_dim == 512
        W, b = bank.head
        model, status = build_deployed(bank, torch.as_tensor(W), torch.as_tensor(b),
                                       {"space": "raw", "tukey_lambda": 1.0, "method": "ce", "head": "linear"}, {})
        test = bank.load("test")
    assert model is not None, status
    torch.save(model, tmp_path / "model.pt")
    deployed = load_deployed(tmp_path / "model.pt", normalise=False)
    assert deployed.classifier.backbone.conv1.in_channels == 1
    assert deployed(torch.zeros(2, 1, 8, 8)).shape == (2, 10) and test["features"].shape[1] == 512
