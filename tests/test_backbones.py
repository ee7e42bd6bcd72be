"""Backbones over BACKBONES, the Classifier wrapper and loading local checkpoints."""
import pytest
import torch

from glag.data.errors import GlagError
from glag.extract.backbones import BACKBONES, Classifier, build_backbone, load_pretrained, register_backbone
from glag.extract.backbones.resnet_imagenet import Bottleneck, ResNet


def images(b, cin, size, seed=0):
    return torch.randn(b, cin, size, size, generator=torch.Generator().manual_seed(seed))


SHAPES = [(n, 3, 32) for n in sorted(BACKBONES)] + [  # gray 8x8 (digits) and 28x28 (Fashion-MNIST)
    (n, 1, size) for n in sorted(BACKBONES) if n != "resnet50" for size in (8, 28)]


@pytest.mark.parametrize("name, cin, size", SHAPES)
def test_features_are_pooled_non_negative_and_trainable(name, cin, size):
    torch.manual_seed(0)
    model = build_backbone(name, cin, size)
    x = images(3, cin, size)
    feats = model(x)
    assert feats.shape == (3, model.feature_dim) and isinstance(model.feature_dim, int)
    assert torch.isfinite(feats).all() and (feats >= 0).all() and (feats > 0).any()
    feats.sum().backward()
    first = next(p for p in model.parameters() if p.ndim == 4)   # the stem conv
    assert first.shape[1] == cin and first.grad is not None and first.grad.abs().sum() > 0


def test_feature_dims():
    dims = {n: build_backbone(n, 3, 32).feature_dim for n in BACKBONES}
    assert dims == {"resnet32": 64, "resnet_small": 64, "resnet10": 512, "resnet50": 2048}


def test_resnet32_is_the_cifar_resnet_with_parameter_free_shortcuts():
    model = build_backbone("resnet32", 3, 32)
    assert len(model.layers) == 15                                     # 3 stages x 5 blocks
    assert [b.conv2.out_channels for b in model.layers[::5]] == [16, 32, 64]
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.45e6 < n_params < 0.47e6                                   # He et al.: 0.46 M, option A
    assert not any("shortcut" in k or "downsample" in k for k, _ in model.named_parameters())


def test_resnet_small_is_much_smaller():
    small = sum(p.numel() for p in build_backbone("resnet_small", 1, 8).parameters())
    assert small < 100_000


def test_imagenet_trunks_keep_torchvision_names_without_fc():
    trunk = build_backbone("resnet50", 3, 224)
    reference = ResNet(Bottleneck, [3, 4, 6, 3]).state_dict()
    assert set(trunk.state_dict()) == {k for k in reference if not k.startswith("fc.")}


def test_unknown_and_duplicate_backbones():
    with pytest.raises(ValueError, match="resnet32"):
        build_backbone("vgg", 3, 32)
    with pytest.raises(KeyError, match="resnet32"):
        register_backbone("resnet32")(lambda cin, size: None)
    with pytest.raises(ValueError, match="in_channels"):
        build_backbone("resnet32", 0, 32)


def test_classifier_head_on_features():
    model = Classifier(build_backbone("resnet_small", 1, 8), num_classes=7).eval()
    x = images(4, 1, 8)
    feats, logits = model.features(x), model(x)
    assert feats.shape == (4, 64) and logits.shape == (4, 7)
    assert torch.allclose(logits, model.head(feats))
    assert model.head.weight.shape == (7, 64) and model.head.bias.shape == (7,)


def _pair(seed_a=1, seed_b=2):
    torch.manual_seed(seed_a)
    a = build_backbone("resnet_small", 1, 8)
    torch.manual_seed(seed_b)
    return a, build_backbone("resnet_small", 1, 8)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_pretrained_round_trip(tmp_path):
    a, b = _pair()
    assert not _same(a, b)
    torch.save(a.state_dict(), tmp_path / "a.pt")
    assert load_pretrained(b, tmp_path / "a.pt") == ([], [])
    assert _same(a, b)


@pytest.mark.parametrize("wrap", ["state_dict", "model"])
@pytest.mark.parametrize("prefix", ["module.", "backbone.", "module.backbone."])
def test_load_pretrained_unwraps_and_strips_prefixes(tmp_path, wrap, prefix):
    a, b = _pair()
    state = {prefix + k: v for k, v in a.state_dict().items()}
    state.update({"fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)})
    torch.save({wrap: state, "epoch": 3}, tmp_path / "a.pt")
    assert load_pretrained(b, tmp_path / "a.pt") == ([], [])
    assert _same(a, b)


def test_load_pretrained_reports_missing_and_unexpected(tmp_path):
    a, b = _pair()
    state = a.state_dict()
    dropped = "conv1.weight"
    del state[dropped]
    state["projector.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "a.pt")
    missing, unexpected = load_pretrained(b, tmp_path / "a.pt")
    assert missing == [dropped] and unexpected == ["projector.weight"]
    assert torch.equal(a.state_dict()["bn1.weight"], b.state_dict()["bn1.weight"])


def test_load_pretrained_takes_a_classifier_checkpoint(tmp_path):
    a, b = _pair()
    torch.save(Classifier(a, 5).state_dict(), tmp_path / "clf.pt")   # backbone.* and head.*
    assert load_pretrained(b, tmp_path / "clf.pt") == ([], [])
    assert _same(a, b)


def _bad_files(tmp_path):
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"lr": 0.1, "epoch": 3}, tmp_path / "dict.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    torch.save(build_backbone("resnet32", 1, 8).state_dict(), tmp_path / "resnet32.pt")
    return ["text.pt", "list.pt", "dict.pt", "foreign.pt", "resnet32.pt", "absent.pt", "."]


def test_load_pretrained_rejects_what_is_not_a_fitting_state_dict(tmp_path):
    _, b = _pair()
    before = {k: v.clone() for k, v in b.state_dict().items()}
    for name in _bad_files(tmp_path):
        with pytest.raises(GlagError) as err:
            load_pretrained(b, tmp_path / name)
        message = str(err.value)
        assert "\n" not in message and str(tmp_path / name) in message, name
    assert all(torch.equal(before[k], v) for k, v in b.state_dict().items())   # untouched
