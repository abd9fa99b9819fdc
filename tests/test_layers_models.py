"""Layers and CNNs of the ResNets notebook: behaviour, and parameter counts matching the notebook's tables exactly."""

import math

import pytest
import timm
import torch
import torch.nn as nn

from slowai.layers import Conv, DoubleConvBlock, GeneralReLU, ResidualConvBlock, init_leaky_weights
from slowai.models.cnn import CNN, DeeperCNN
from slowai.models.registry import create_model, list_models

NFS = (8, 16, 32, 64, 128)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_general_relu_is_leaky_relu_shifted_down():
    x = torch.tensor([-2.0, 0.0, 3.0])
    assert torch.allclose(GeneralReLU(a=0.1, b=0.4)(x), torch.tensor([-0.6, -0.4, 2.6]))
    assert torch.allclose(GeneralReLU(a=0.1, b=0.4, maxv=2.0)(x), torch.tensor([-0.6, -0.4, 2.0]))


def test_conv_is_conv_then_act_then_norm_with_bias_only_without_norm():
    c = Conv(3, 8)
    assert [name for name, _ in c.named_children()] == ["conv", "act", "norm"]
    assert isinstance(c.act, GeneralReLU) and isinstance(c.norm, nn.BatchNorm2d)
    assert c.conv.bias is None and c.conv.stride == (2, 2) and c.conv.padding == (1, 1)

    no_norm = Conv(3, 8, norm=False)
    assert [name for name, _ in no_norm.named_children()] == ["conv", "act"]
    assert no_norm.conv.bias is not None

    assert [name for name, _ in Conv(3, 8, act=False).named_children()] == ["conv", "norm"]
    assert isinstance(Conv(3, 8, act=nn.ReLU).act, nn.ReLU)  # any activation factory can replace GeneralReLU
    assert Conv(3, 8, ks=5).conv.padding == (2, 2)


# Per-layer "N. params" rows of the notebook's summaries for DeeperCNN(nfs=(8, 16, 32, 64, 128)).
NOTEBOOK_COUNTS = {
    Conv: ([216, 1_184, 4_672, 18_560, 73_984, 11_540], 110_156),
    ResidualConvBlock: ([1_848, 3_664, 14_496, 57_664, 230_016, 13_750], 321_438),
    DoubleConvBlock: ([1_832, 3_520, 13_952, 55_552, 221_696, 12_460], 309_012),
}


@pytest.mark.parametrize("block", list(NOTEBOOK_COUNTS), ids=lambda b: b.__name__)
def test_deeper_cnn_param_counts_match_the_notebook(block):
    per_layer, total = NOTEBOOK_COUNTS[block]
    model = DeeperCNN.kaiming(nfs=NFS, block=block)
    assert [n_params(layer) for layer in model.layers] == per_layer
    assert n_params(model) == total


@pytest.mark.parametrize(("name", "total"), [("conv", 110_156), ("residual", 321_438), ("plain", 309_012)])
def test_registry_names_build_the_notebook_models(name, total):
    assert n_params(create_model(name, in_chans=1, num_classes=10)) == total


def test_timm_resnet18_matches_the_notebook_count():
    assert n_params(timm.create_model("resnet18", in_chans=1, num_classes=10)) == 11_175_370
    assert n_params(create_model("timm/resnet18", in_chans=1, num_classes=10)) == 11_175_370


def test_registry_lists_the_cnns_and_rejects_unknown_names():
    assert {"cnn", "conv", "plain", "residual"} <= set(list_models())
    with pytest.raises(ValueError, match=r"unknown model 'resnet9000'.*conv.*plain.*residual"):
        create_model("resnet9000")


@pytest.mark.parametrize("name", ["cnn", "conv", "plain", "residual"])
@pytest.mark.parametrize(("in_chans", "size"), [(1, 28), (3, 32)], ids=["fashion-mnist", "cifar10"])
def test_forward_gives_one_logit_per_class(name, in_chans, size):
    model = create_model(name, in_chans=in_chans, num_classes=10)
    assert model(torch.randn(2, in_chans, size, size)).shape == (2, 10)


def test_stack_reaches_1x1_on_28_and_32_and_pools_globally_on_bigger_images():
    model = DeeperCNN()
    for size in (28, 32):
        assert model.layers(torch.randn(2, 1, size, size)).shape[-2:] == (1, 1)
    assert model(torch.randn(2, 1, 64, 48)).shape == (2, 10)


def test_wrong_in_chans_says_how_to_fix_it():
    model = create_model("residual", in_chans=1)
    with pytest.raises(ValueError, match=r"expects 1 input channel\(s\) but got 3: build it with in_chans=3"):
        model(torch.randn(2, 3, 32, 32))


def test_deeper_cnn_needs_five_channel_counts():
    with pytest.raises(ValueError, match="exactly 5 channel counts"):
        DeeperCNN(nfs=(8, 16, 32, 64))


def test_registry_passes_nfs_act_and_init_through():
    small = create_model("residual", nfs=(4, 8, 16, 32, 64))
    assert n_params(small) < n_params(create_model("residual"))

    relu = create_model("plain", act=nn.ReLU)
    assert any(isinstance(m, nn.ReLU) for m in relu.modules())
    assert not any(isinstance(m, GeneralReLU) for m in relu.modules())

    # Leaky Kaiming std ~ sqrt(2/1.01/fan_in) vs PyTorch's default ~ sqrt(1/(3*fan_in)): about 2.4x apart.
    leaky_std = create_model("conv", init="leaky").layers[1].conv.weight.std()
    default_std = create_model("conv", init="default").layers[1].conv.weight.std()
    assert leaky_std > 2 * default_std
    with pytest.raises(ValueError, match="unknown init"):
        create_model("conv", init="xavier")


def test_cnn_default_shape_and_block_choice():
    model = CNN(nfs=(8, 16, 32, 64), block=ResidualConvBlock, in_chans=3)
    assert len(model.layers) == 5 and all(isinstance(layer, ResidualConvBlock) for layer in model.layers)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_residual_block_with_stride_2_keeps_odd_sizes_in_step():
    block = ResidualConvBlock(4, 8, stride=2)
    assert block(torch.randn(2, 4, 7, 7)).shape == (2, 8, 4, 4)  # ceil_mode pooling: 7 -> 4, like the conv path


def test_residual_block_identity_path_is_free_when_shapes_match():
    block = ResidualConvBlock(8, 8, stride=1)
    assert isinstance(block.pool, nn.Identity) and isinstance(block.idconv, nn.Identity)
    assert n_params(block) == n_params(DoubleConvBlock(8, 8, stride=1))


def test_residual_block_without_act_returns_the_plain_sum():
    block = ResidualConvBlock(4, 4, stride=1, act=False).eval()
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(block(x), block.conv_b(block.conv_a(x)) + x)


@pytest.mark.parametrize("a", [0.1, 0.0])
def test_init_leaky_weights_has_kaiming_std_for_the_leak(a):
    conv = nn.Conv2d(64, 128, 3)
    init_leaky_weights(conv, a=a)
    fan_in = 64 * 3 * 3
    expected = math.sqrt(2 / ((1 + a**2) * fan_in))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.03)


def test_registry_leaves_input_channels_and_classes_to_the_factory():
    first_conv = lambda m: next(x for x in m.modules() if isinstance(x, torch.nn.Conv2d))  # noqa: E731
    assert first_conv(create_model("resnet_tutorial")).in_channels == 3  # a CIFAR-10 model stays 3-channel
    assert first_conv(create_model("residual")).in_channels == 1  # a Fashion-MNIST one stays 1-channel
    assert first_conv(create_model("resnet_tutorial", in_chans=1)).in_channels == 1


def test_width_is_one_knob_for_every_block_of_the_notebook_nets():
    widths = [m.out_channels for m in create_model("plain", width=4).modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(widths) == 64 and min(widths) == 4  # (4, 8, 16, 32, 64) then the 10-class head
    assert n_params(create_model("residual", width=8)) == n_params(create_model("residual")) == 321_438
    with pytest.raises(ValueError, match="either width or nfs"):
        create_model("conv", width=4, nfs=(4, 8, 16, 32, 64))


# Ablation toggles of the residual net, on the notebook's 1-channel 28x28, 10-class setup.
RESIDUAL_TOTAL = 321_438
# idconv (1x1 conv + bias) params per block, nfs (8, 16, 32, 64, 128) then the 10-class head:
# 1*8+8 + 8*16+16 + 16*32+32 + 32*64+64 + 64*128+128 + 128*10+10 = 16 + 144 + 544 + 2_112 + 8_320 + 1_290 = 12_426.
NO_SKIP_TOTAL = RESIDUAL_TOTAL - 12_426  # 309_012: the plain net's count, as the act moves but has no params
# Each Conv swaps BatchNorm's weight+bias (2 * c_out) for a conv bias (c_out); two Convs per block:
# 2 * (8 + 16 + 32 + 64 + 128 + 10) = 516.
NO_NORM_TOTAL = RESIDUAL_TOTAL - 516  # 320_922


def test_residual_ablation_defaults_keep_the_notebook_model_and_its_outputs():
    torch.manual_seed(0)
    default = create_model("residual", in_chans=1, num_classes=10).eval()
    torch.manual_seed(0)
    explicit = create_model("residual", in_chans=1, num_classes=10, skip=True, shortcut="pool", norm=True).eval()
    x = torch.randn(2, 1, 28, 28)
    assert n_params(default) == n_params(explicit) == RESIDUAL_TOTAL
    assert torch.equal(default(x), explicit(x))


def test_residual_without_skip_has_no_identity_path():
    model = create_model("residual", skip=False)
    assert n_params(model) == NO_SKIP_TOTAL
    assert not any(hasattr(block, "idconv") or hasattr(block, "pool") for block in model.layers)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_block_without_skip_is_act_of_the_two_convs():
    block = ResidualConvBlock(4, 8, stride=2, skip=False).eval()
    x = torch.randn(2, 4, 7, 7)
    assert torch.allclose(block(x), block.act(block.conv_b(block.conv_a(x))))
    assert not any(isinstance(m, nn.AvgPool2d) for m in block.modules())


@pytest.mark.parametrize("size", [28, 8])
def test_residual_with_strided_shortcut_matches_pool_params_and_shapes(size):
    model = create_model("residual", shortcut="stride")
    assert n_params(model) == RESIDUAL_TOTAL  # channels change in every block: one 1x1 conv each, as with "pool"
    assert not any(isinstance(m, nn.AvgPool2d) for m in model.modules())
    assert model(torch.randn(2, 1, size, size)).shape == (2, 10)
    assert model.layers(torch.randn(2, 1, size, size)).shape == (2, 10, 1, 1)


def test_strided_shortcut_keeps_odd_sizes_in_step_and_is_free_only_when_shapes_match():
    block = ResidualConvBlock(4, 8, stride=2, shortcut="stride")
    assert block.idconv.stride == (2, 2) and block.idconv.padding == (0, 0)
    assert block(torch.randn(2, 4, 7, 7)).shape == (2, 8, 4, 4)  # 1x1 stride 2: floor((7 - 1) / 2) + 1 = 4
    same_channels = ResidualConvBlock(8, 8, stride=2, shortcut="stride")
    assert isinstance(same_channels.idconv, nn.Conv2d) and same_channels.idconv.stride == (2, 2)
    assert same_channels(torch.randn(2, 8, 7, 7)).shape == (2, 8, 4, 4)
    identity = ResidualConvBlock(8, 8, stride=1, shortcut="stride")
    assert isinstance(identity.idconv, nn.Identity) and isinstance(identity.pool, nn.Identity)


def test_unknown_shortcut_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown shortcut 'avg'.*'pool', 'stride'"):
        create_model("residual", shortcut="avg")
    with pytest.raises(ValueError, match=r"'pool', 'stride'"):
        ResidualConvBlock(4, 8, skip=False, shortcut="conv")


def test_residual_without_norm_has_no_batchnorm_and_trains_a_step():
    model = create_model("residual", norm=False)
    assert n_params(model) == NO_NORM_TOTAL
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and torch.isfinite(nn.functional.cross_entropy(model(x), y))


@pytest.mark.parametrize("name", ["cnn", "conv", "plain"])
def test_norm_false_reaches_every_block_of_the_other_nets(name):
    model = create_model(name, norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_params(model) < n_params(create_model(name))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_residual_ablations_combine():
    model = create_model("residual", skip=False, norm=False, act=nn.ReLU, init="default")
    assert n_params(model) == NO_SKIP_TOTAL - 516  # 308_496
    assert any(isinstance(m, nn.ReLU) for m in model.modules())
    assert not any(isinstance(m, (GeneralReLU, nn.BatchNorm2d)) for m in model.modules())
    assert torch.isfinite(model(torch.randn(2, 1, 28, 28))).all()


@pytest.mark.parametrize("name", ["plain", "conv", "cnn"])
def test_skip_and_shortcut_are_residual_only(name):
    with pytest.raises(TypeError, match=rf"'{name}' got skip: only the 'residual' model takes them"):
        create_model(name, skip=False)
    with pytest.raises(TypeError, match="got shortcut: only the 'residual'"):
        create_model(name, shortcut="stride")
