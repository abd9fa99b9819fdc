"""summarize(): one traced forward gives per-layer shapes, params and per-sample MFLOPs; SummaryCB runs it in fit."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from slowai.layers import ResidualConvBlock
from slowai.learner import CancelFitException
from slowai.models.cnn import DeeperCNN
from slowai.summary import Summary, SummaryCB, summarize


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.fixture
def residual_cnn() -> DeeperCNN:
    return DeeperCNN.kaiming(nfs=(8, 16, 32, 64, 128), block=ResidualConvBlock)


def test_rows_follow_model_layers_with_batch_dim_shapes(residual_cnn):
    s = summarize(residual_cnn, input_shape=(1, 28, 28), batch_size=4)
    assert [r["type"] for r in s.rows] == ["ResidualConvBlock"] * 6
    assert s.rows[0]["input_shape"] == (4, 1, 28, 28)
    assert [r["output_shape"] for r in s.rows] == [
        (4, 8, 28, 28),
        (4, 16, 14, 14),
        (4, 32, 7, 7),
        (4, 64, 4, 4),
        (4, 128, 2, 2),
        (4, 10, 1, 1),
    ]
    assert [r["params"] for r in s.rows] == [1_848, 3_664, 14_496, 57_664, 230_016, 13_750]
    assert s.total_params == 321_438


def test_conv2d_flops_are_two_per_multiply_add_per_sample():
    c_in, c_out, k, size = 3, 16, 3, 9
    model = nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=2, padding=1, bias=False))
    s = summarize(model, xb=torch.randn(5, c_in, size, size))
    h_out = w_out = 5  # (9 + 2 - 3) // 2 + 1
    expected_flops = 2 * c_in * c_out * k * k * h_out * w_out
    assert s.rows[0]["mflops"] == pytest.approx(expected_flops / 1e6)
    assert s.total_mflops == pytest.approx(expected_flops / 1e6)


def test_a_batch_shape_gives_the_same_params_and_per_sample_mflops_as_a_sample_shape(residual_cnn):
    one = summarize(residual_cnn, input_shape=(1, 28, 28))
    batch = summarize(residual_cnn, input_shape=(4, 1, 28, 28))
    assert (one.batch_size, batch.batch_size) == (2, 4)
    assert batch.rows[0]["input_shape"] == (4, 1, 28, 28) and batch.rows[-1]["output_shape"] == (4, 10, 1, 1)
    assert batch.total_params == one.total_params == 321_438
    assert batch.total_mflops == pytest.approx(one.total_mflops)
    assert [r["mflops"] for r in batch.rows] == pytest.approx([r["mflops"] for r in one.rows])
    assert summarize(residual_cnn, input_shape=(1, 28, 28), batch_size=4).total_mflops == pytest.approx(
        one.total_mflops
    )


def test_a_batch_shape_and_a_different_batch_size_conflict(residual_cnn):
    assert summarize(residual_cnn, input_shape=(4, 1, 28, 28), batch_size=4).batch_size == 4
    with pytest.raises(ValueError, match=r"sets the batch to 4 but batch_size=3"):
        summarize(residual_cnn, input_shape=(4, 1, 28, 28), batch_size=3)


@pytest.mark.parametrize("shape", [(28, 28), (1, 1, 1, 28, 28)])
def test_other_input_shape_lengths_say_which_shapes_are_accepted(residual_cnn, shape):
    with pytest.raises(ValueError, match=r"sample shape \(C, H, W\) or a batch shape \(B, C, H, W\)"):
        summarize(residual_cnn, input_shape=shape)


def test_row_flops_add_up_to_the_total(residual_cnn):
    s = summarize(residual_cnn, input_shape=(1, 28, 28))
    assert sum(r["mflops"] for r in s.rows) == pytest.approx(s.total_mflops)


def test_total_counts_the_whole_model_even_for_a_subset_of_rows(residual_cnn):
    s = summarize(residual_cnn, modules=[residual_cnn.layers[0]], input_shape=(1, 28, 28))
    assert len(s.rows) == 1
    assert s.total_params == sum(p.numel() for p in residual_cnn.parameters())


def test_without_layers_attribute_rows_are_top_level_children():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2))
    s = summarize(model, xb=torch.randn(2, 3, 4))
    assert [r["type"] for r in s.rows] == ["Flatten", "Linear", "ReLU", "Linear"]
    assert [r["output_shape"] for r in s.rows] == [(2, 12), (2, 5), (2, 5), (2, 2)]


def test_text_markdown_and_wandb_data_contain_every_row(residual_cnn):
    s = summarize(residual_cnn, input_shape=(1, 28, 28))
    text, md = str(s), s.to_markdown()
    assert len(text.splitlines()) == 1 + len(s.rows) + 1  # header, rows, Total
    assert len(md.splitlines()) == 2 + len(s.rows) + 1
    for row in s.rows:
        for cell in (str(row["input_shape"]), str(row["output_shape"]), f"{row['params']:,}"):
            assert cell in text and cell in md
    assert "321,438" in text.splitlines()[-1] and text.splitlines()[-1].startswith("Total")
    assert "MFLOPs/sample" in text and s._repr_markdown_() == md
    assert len(s.data) == len(s.rows) + 1 and all(len(r) == len(s.columns) for r in s.data)


def test_training_modes_and_batchnorm_stats_are_left_alone(residual_cnn):
    residual_cnn.train()
    residual_cnn.layers[0].eval()  # e.g. a frozen block must stay frozen
    stats = residual_cnn.layers[1].conv_a.norm.running_mean.clone()
    summarize(residual_cnn, input_shape=(1, 28, 28))
    assert residual_cnn.training and residual_cnn.layers[1].training
    assert not residual_cnn.layers[0].training and not residual_cnn.layers[0].conv_a.training
    assert torch.equal(residual_cnn.layers[1].conv_a.norm.running_mean, stats)


class OneBatch:
    """The slice of DataLoaders that summaries use: a (xb, yb) batch already on the device."""

    def one_batch(self, split="train"):
        return torch.randn(3, 1, 32, 32), torch.zeros(3, dtype=torch.long)


def test_input_comes_from_a_dataloaders_batch(residual_cnn):
    s = summarize(residual_cnn, dls=OneBatch())
    assert s.rows[0]["input_shape"] == (3, 1, 32, 32) and s.batch_size == 3


def test_no_input_source_is_a_clear_error(residual_cnn):
    with pytest.raises(ValueError, match="xb, dls or input_shape"):
        summarize(residual_cnn)


def test_summary_is_a_plain_value():
    s = Summary(rows=[], total_params=0, total_mflops=0.0, batch_size=1)
    assert str(s).splitlines()[-1].startswith("Total")


def test_summary_cb_stores_prints_and_cancels(residual_cnn, capsys):
    # Stands in for a Learner: SummaryCB only reads learn.model and learn.dls.
    learn = SimpleNamespace(model=residual_cnn, dls=OneBatch())
    cb = SummaryCB(cancel=True)
    cb.learn = learn
    with pytest.raises(CancelFitException):
        cb.before_fit()
    assert learn.summary is cb.summary and cb.summary.total_params == 321_438
    assert "ResidualConvBlock" in capsys.readouterr().out
    assert SummaryCB.order < 0  # runs before other callbacks' before_fit
