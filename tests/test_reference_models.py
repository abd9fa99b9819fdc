"""Reference architectures: the CNN tutorial's CIFAR-10 models and ResNet-18..200, checked against published counts."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from slowai.data import cifar10
from slowai.models import create_model, list_models
from slowai.models.resnet import BasicBlock, Bottleneck
from slowai.models.tutorial import ACT_FNS, GoogleNet, PreActResNetBlock, ResNetBlock
from slowai.utils import set_seed

TUTORIAL_MODELS = ("googlenet", "resnet_tutorial", "preact_resnet_tutorial", "densenet_tutorial")
RESNET_FAMILY = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200")


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(
    "name, kw, expected",
    [
        ("googlenet", {}, 260_650),
        ("googlenet", {"bias": False}, 259_338),
        ("resnet_tutorial", {}, 272_378),
        ("preact_resnet_tutorial", {}, 272_250),
        ("densenet_tutorial", {}, 239_146),
    ],
)
def test_tutorial_models_match_the_tutorials_parameter_table(name, kw, expected):
    assert n_params(create_model(name, in_chans=3, num_classes=10, **kw)) == expected


@pytest.mark.parametrize(
    "name, expected",
    zip(RESNET_FAMILY, (11_689_512, 21_797_672, 25_557_032, 44_549_160, 60_192_808, 64_673_832)),
)
def test_resnet_family_matches_the_standard_imagenet_parameter_counts(name, expected):
    with torch.device("meta"):  # shapes only: skips allocating and initialising up to 65M weights
        model = create_model(name, in_chans=3, num_classes=1000, stem="imagenet")
    assert n_params(model) == expected


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_is_the_standard_layout_weight_for_weight(name):
    ours = create_model(name, in_chans=3, num_classes=1000, stem="imagenet").eval()
    reference = getattr(torchvision.models, name)(weights=None).eval()
    ours.load_state_dict(reference.state_dict())  # strict: every name and shape must line up
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


# ----------------------------------------------------------------------------------------------- block design
def test_bottleneck_strides_on_its_3x3_conv_and_projects_with_the_same_stride():
    block = create_model("resnet50", in_chans=3, num_classes=10).layer2[0]
    assert isinstance(block, Bottleneck)
    assert (block.conv1.stride, block.conv2.stride, block.conv3.stride) == ((1, 1), (2, 2), (1, 1))
    proj_conv, proj_bn = block.downsample
    assert proj_conv.kernel_size == (1, 1) and proj_conv.stride == (2, 2) and isinstance(proj_bn, nn.BatchNorm2d)


def test_basic_block_projects_only_when_the_shape_changes():
    model = create_model("resnet18", in_chans=3, num_classes=10)
    assert model.layer1[0].downsample is None and model.layer2[1].downsample is None
    first = model.layer2[0]
    assert isinstance(first, BasicBlock) and first.conv1.stride == (2, 2) and first.downsample[0].stride == (2, 2)


def test_bottleneck_projects_the_first_block_even_without_stride():
    first = create_model("resnet50", in_chans=3, num_classes=10).layer1[0]
    assert first.conv2.stride == (1, 1) and first.downsample[0].stride == (1, 1)  # 64 -> 256 channels


def test_registered_resnets_default_to_the_small_image_stem():
    model = create_model("resnet18", in_chans=3, num_classes=10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and isinstance(model.maxpool, nn.Identity)
    big = create_model("resnet18", in_chans=3, num_classes=10, stem="imagenet")
    assert big.conv1.kernel_size == (7, 7) and big.conv1.stride == (2, 2) and isinstance(big.maxpool, nn.MaxPool2d)


def test_zero_init_residual_starts_every_block_at_its_last_batchnorm_zero():
    model = create_model("resnet50", in_chans=3, num_classes=10, zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16 and all(torch.all(b.bn3.weight == 0) for b in blocks)


def test_preact_projection_normalises_and_activates_before_its_1x1_conv():
    block = PreActResNetBlock(16, nn.ReLU, subsample=True, c_out=32)
    bn, act, conv = block.downsample
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(act, nn.ReLU)
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and conv.bias is None
    assert block(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)


def test_a_block_without_subsampling_cannot_change_width():
    with pytest.raises(ValueError, match="keeps its width"):
        ResNetBlock(16, nn.ReLU, subsample=False, c_out=32)


def test_googlenet_bias_flag_removes_every_conv_bias():
    convs = [m for m in GoogleNet(bias=False).modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 8 * 6 and all(c.bias is None for c in convs)


# ----------------------------------------------------------------------------------------------- initialisation
def test_tutorial_init_uses_the_activations_gain_and_identity_batchnorm():
    model = GoogleNet(act="tanh")
    conv = model.input_net[0]  # 3 -> 64, 3x3, fan_in mode
    expected_std = (5 / 3) / math.sqrt(3 * 3 * 3)
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)


def test_tutorial_resnet_init_uses_fan_out():
    conv = create_model("resnet_tutorial", in_chans=3, num_classes=10).blocks[0].net[0]  # 16 -> 16, 3x3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2) / math.sqrt(16 * 3 * 3), rel=0.1)


# ----------------------------------------------------------------------------------------------- forward passes
@pytest.mark.parametrize("name", TUTORIAL_MODELS + RESNET_FAMILY)
def test_every_new_model_maps_a_cifar_batch_to_class_logits(name):
    model = create_model(name, in_chans=3, num_classes=10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", TUTORIAL_MODELS + ("resnet18",))
def test_single_channel_28px_inputs_work_too(name):
    model = create_model(name, in_chans=1, num_classes=10)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_stem_handles_224px(name):
    model = create_model(name, in_chans=3, num_classes=1000, stem="imagenet").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize("act", sorted(ACT_FNS))
@pytest.mark.parametrize("name", TUTORIAL_MODELS)
def test_every_activation_builds_and_runs(name, act):
    model = create_model(name, in_chans=3, num_classes=10, act=act)
    assert any(isinstance(m, ACT_FNS[act]) for m in model.modules())
    other_acts = tuple(cls for key, cls in ACT_FNS.items() if key != act)
    assert not any(isinstance(m, other_acts) for m in model.modules())
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", TUTORIAL_MODELS)
def test_unknown_activation_lists_the_valid_choices(name):
    with pytest.raises(ValueError, match="unknown act 'swish'; valid choices: tanh, relu, leakyrelu, gelu"):
        create_model(name, in_chans=3, num_classes=10, act="swish")


def test_unknown_block_lists_the_valid_choices():
    with pytest.raises(ValueError, match="valid choices: ResNetBlock, PreActResNetBlock"):
        create_model("resnet_tutorial", in_chans=3, num_classes=10, block="Bottleneck")


def test_unknown_stem_lists_the_valid_choices():
    with pytest.raises(ValueError, match="valid choices: imagenet, cifar"):
        create_model("resnet18", in_chans=3, num_classes=10, stem="tiny")


def test_unknown_model_name_lists_the_registered_names():
    with pytest.raises(ValueError, match="unknown model 'resnet9'") as err:
        create_model("resnet9")
    assert all(name in str(err.value) for name in TUTORIAL_MODELS + RESNET_FAMILY)


def test_new_models_are_listed_with_a_description():
    listed = list_models()
    assert all(listed[name] for name in TUTORIAL_MODELS + RESNET_FAMILY)
    assert "stem='cifar'" in listed["resnet50"]


# ----------------------------------------------------------------------------------------------- training
def test_tutorial_resnet_learns_on_a_cifar10_slice(cifar_root):
    set_seed(0)
    dls = cifar10(root=cifar_root, subset=512, device="cpu", bs=64)
    model = create_model("resnet_tutorial", in_chans=3, num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    probe_x, probe_y = dls.one_batch()

    def probe_loss() -> float:
        with torch.no_grad():
            return F.cross_entropy(model(probe_x), probe_y).item()

    before = probe_loss()
    for xb, yb in dls.train:  # one epoch: 8 batches of 64
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert probe_loss() < before - 0.1
