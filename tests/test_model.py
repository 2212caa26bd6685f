"""The torch model: the paper's method, per-row weights, prediction."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skhypernet._model import (
    HyperNetwork,
    PointEstimate,
    StochasticMLP,
    forward_materialised,
    forward_per_row,
    layer_shapes,
)


def make_hypernet(shapes=((13, 50), (50, 1)), dropout=0.5, hidden=(100, 50), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return HyperNetwork(
        list(shapes), noise_dim=10, hidden_layer_sizes=list(hidden), dropout=dropout,
        generator=generator,
    )


def test_layer_shapes():
    assert layer_shapes(13, [50], 1) == [(13, 50), (50, 1)]
    assert layer_shapes(784, [400, 400], 10) == [(784, 400), (400, 400), (400, 10)]


def test_output_size_is_number_of_main_network_parameters():
    hypernet = make_hypernet()
    assert hypernet.n_main_parameters == 13 * 50 + 50 + 50 + 1 == 751
    codes = hypernet.sample_codes(7, torch.Generator().manual_seed(1), training=False)
    assert codes.shape == (7, 51)  # last hidden layer plus the constant 1
    assert hypernet.flat_weights(codes).shape == (7, 751)
    # The output layer is linear in the codes with P outputs: (50 + 1) x P.
    n_output_layer = sum(w.numel() + b.numel() for w, b in zip(
        hypernet.weight_heads, hypernet.bias_heads))
    assert n_output_layer == 51 * 751


def test_noise_scale_starts_at_one_and_input_noise_at_its_parameter():
    hypernet = make_hypernet()
    assert float(F.softplus(hypernet.noise_scale_raw.detach())) == pytest.approx(1.0)
    model = StochasticMLP(hypernet, input_noise=0.5)
    assert model.input_noise_scale == pytest.approx(0.5)
    assert StochasticMLP(hypernet, input_noise=0.0).input_noise_raw is None


def test_hypernetwork_maps_noise_through_relu_mlp_with_dropout_in_training_only():
    hypernet = make_hypernet(hidden=(20,), dropout=0.5)
    generator = torch.Generator().manual_seed(3)
    eps = torch.randn(64, 10, generator=generator)
    expected = torch.relu(eps @ hypernet.hidden_weights[0] + hypernet.hidden_biases[0])
    codes = hypernet.sample_codes(64, torch.Generator().manual_seed(3), training=False)
    torch.testing.assert_close(codes[:, :-1], expected)
    trained = hypernet.sample_codes(64, torch.Generator().manual_seed(3), training=True)
    dropped = (trained[:, :-1] == 0) & (expected > 0)
    assert 0.3 < dropped.float().sum() / (expected > 0).float().sum() < 0.7
    kept = trained[:, :-1] != 0
    torch.testing.assert_close(trained[:, :-1][kept], 2 * expected[kept])


def test_contracted_forward_equals_materialised_weights():
    hypernet = make_hypernet(shapes=layer_shapes(6, [8, 5], 3), dropout=0.0)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    codes = hypernet.sample_codes(32, torch.Generator().manual_seed(1), training=True)
    contracted = forward_per_row(x, codes, hypernet)
    reference = forward_materialised(x, hypernet.materialise(codes))
    torch.testing.assert_close(contracted, reference, rtol=1e-5, atol=1e-6)
    # The flat layout: weight matrix row-major then bias, layer after layer.
    flat = hypernet.flat_weights(codes)
    w0 = flat[:, : 6 * 8].reshape(32, 6, 8)
    torch.testing.assert_close(w0, hypernet.materialise(codes)[0][0])


def test_point_estimate_shares_weights_across_rows():
    point = PointEstimate(layer_shapes(4, [6], 2), torch.Generator().manual_seed(0))
    assert point.sample_codes(5, None, training=True) is None
    x = torch.randn(5, 4)
    out = forward_per_row(x, None, point)
    w0, b0 = point.weight_heads[0][0], point.bias_heads[0][0]
    w1, b1 = point.weight_heads[1][0], point.bias_heads[1][0]
    torch.testing.assert_close(out, torch.relu(x @ w0 + b0) @ w1 + b1)


def test_one_weight_sample_per_row_in_training():
    model = StochasticMLP(make_hypernet(shapes=layer_shapes(3, [8], 1)), input_noise=0.0)
    x = torch.ones(16, 3)  # identical rows
    out = model(x, torch.Generator().manual_seed(0))
    assert out.unique().numel() == 16
    baseline = StochasticMLP(
        PointEstimate(layer_shapes(3, [8], 1), torch.Generator().manual_seed(0)), 0.0
    )
    assert baseline(x, torch.Generator().manual_seed(0)).unique().numel() == 1


def test_input_noise_is_learned():
    model = StochasticMLP(make_hypernet(shapes=layer_shapes(3, [8], 1)), input_noise=0.5)
    out = model(torch.ones(16, 3), torch.Generator().manual_seed(0))
    out.square().mean().backward()
    assert model.input_noise_raw.grad is not None
    assert model.weight_generator.noise_scale_raw.grad is not None


def test_predictive_mean_averages_the_outputs_of_s_weight_samples():
    hypernet = make_hypernet(shapes=layer_shapes(4, [6], 2))
    model = StochasticMLP(hypernet, input_noise=0.5).eval()
    x = torch.randn(9, 4, dtype=torch.float64)
    mean = model.predictive_mean(x, n_samples=25, seed=7)
    codes = hypernet.sample_codes(25, torch.Generator().manual_seed(7), training=False)
    manual = torch.stack([
        forward_materialised(x, [(w[s].double(), b[s].double())
                                 for w, b in hypernet.materialise(codes)])
        for s in range(25)
    ]).mean(0)
    torch.testing.assert_close(mean, manual)
    assert mean.dtype == torch.float64


def test_predictive_mean_is_chunk_independent(monkeypatch):
    from skhypernet import _model

    model = StochasticMLP(make_hypernet(shapes=layer_shapes(4, [6], 2)), 0.5).eval()
    x = torch.randn(50, 4, dtype=torch.float64)
    full = model.predictive_mean(x, n_samples=30, seed=1)
    monkeypatch.setattr(_model, "PREDICT_CHUNK_BYTES", 8 * 200)
    chunked = model.predictive_mean(x, n_samples=30, seed=1)
    np.testing.assert_allclose(chunked.numpy(), full.numpy(), rtol=1e-12)


def test_initial_weight_spread_matches_linear_init():
    hypernet = make_hypernet(shapes=layer_shapes(400, [400], 10), dropout=0.0)
    codes = hypernet.sample_codes(200, torch.Generator().manual_seed(0), training=False)
    weights = hypernet.materialise(codes)[0][0]  # (200, 400, 400)
    spread = weights.std(dim=0).mean()
    assert 0.3 / math.sqrt(3 * 400) < spread < 3 / math.sqrt(3 * 400)
