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
    TrainingNoise,
    layer_shapes,
)

from .reference import forward_materialised, forward_per_row, training_outputs


def make_hypernet(shapes=((13, 50), (50, 1)), dropout=0.5, hidden=(100, 50), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return HyperNetwork(
        list(shapes),
        noise_dim=10,
        hidden_layer_sizes=list(hidden),
        dropout=dropout,
        generator=generator,
    )


def test_layer_shapes():
    assert layer_shapes(13, [50], 1) == [(13, 50), (50, 1)]
    assert layer_shapes(784, [400, 400], 10) == [(784, 400), (400, 400), (400, 10)]


def test_output_size_is_number_of_main_network_parameters():
    hypernet = make_hypernet()
    assert hypernet.n_main_parameters == 13 * 50 + 50 + 50 + 1 == 751
    eps = torch.randn(7, 10)
    codes = hypernet.codes(eps, torch.empty(0))
    assert codes.shape == (7, 51)  # last hidden layer plus the constant 1
    torch.testing.assert_close(codes[:, -1], torch.ones(7))
    assert hypernet.flat_weights(codes).shape == (7, 751)
    # The linear output layer: (50 + 1) x P parameters.
    assert sum(head.numel() for head in hypernet.heads) == 51 * 751


def test_noise_scale_starts_at_one_and_input_noise_at_its_parameter():
    hypernet = make_hypernet()
    assert float(F.softplus(hypernet.noise_scale_raw.detach())) == pytest.approx(1.0)
    model = StochasticMLP(hypernet, input_noise=0.5)
    assert model.input_noise_scale == pytest.approx(0.5)
    assert StochasticMLP(hypernet, input_noise=0.0).input_noise_raw is None


def test_hypernetwork_maps_noise_through_relu_mlp_with_dropout_in_training_only():
    hypernet = make_hypernet(hidden=(20,), dropout=0.5)
    eps = torch.randn(64, 10, generator=torch.Generator().manual_seed(3))
    expected = torch.relu(eps @ hypernet.hidden_weights[0] + hypernet.hidden_biases[0])
    codes = hypernet.codes(eps, torch.empty(0))
    torch.testing.assert_close(codes[:, :-1], expected)
    uniform = torch.rand(64, 20, generator=torch.Generator().manual_seed(4))
    trained = hypernet.codes(eps, uniform)[:, :-1]
    torch.testing.assert_close(trained, expected * (uniform < 0.5) * 2.0)
    assert 0.3 < float((uniform < 0.5).float().mean()) < 0.7


def test_contracted_forward_equals_materialised_weights():
    hypernet = make_hypernet(shapes=layer_shapes(6, [8, 5], 3), dropout=0.0)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    codes = hypernet.codes(torch.randn(32, 10), torch.empty(0))
    contracted = forward_per_row(x, codes, hypernet.heads)
    reference = forward_materialised(x, hypernet.materialise(codes))
    torch.testing.assert_close(contracted, reference, rtol=1e-5, atol=1e-6)
    # The flat layout: (fan_in + 1) x fan_out per layer, bias as last row.
    flat = hypernet.flat_weights(codes)
    torch.testing.assert_close(flat[:, : 7 * 8].reshape(32, 7, 8), hypernet.materialise(codes)[0])


def test_point_estimate_shares_weights_across_rows():
    point = PointEstimate(layer_shapes(4, [6], 2), torch.Generator().manual_seed(0))
    assert point.codes(torch.empty(0), torch.empty(0)) is None
    x = torch.randn(5, 4)
    out = forward_per_row(x, None, point.heads)
    (w0, b0), (w1, b1) = [(head[0, :-1], head[0, -1]) for head in point.heads]
    torch.testing.assert_close(out, torch.relu(x @ w0 + b0) @ w1 + b1)


def test_one_weight_sample_per_row_in_training():
    model = StochasticMLP(make_hypernet(shapes=layer_shapes(3, [8], 1)), input_noise=0.0)
    x = torch.ones(16, 3)  # identical rows
    out = training_outputs(model, x, model.draw_noise(16, 3, torch.Generator().manual_seed(0)))
    assert out.unique().numel() == 16
    baseline = StochasticMLP(
        PointEstimate(layer_shapes(3, [8], 1), torch.Generator().manual_seed(0)), 0.0
    )
    noise = baseline.draw_noise(16, 3, torch.Generator().manual_seed(0))
    assert all(t.numel() == 0 for t in noise)
    assert training_outputs(baseline, x, noise).unique().numel() == 1


def test_input_noise_is_added_and_learned():
    model = StochasticMLP(make_hypernet(shapes=layer_shapes(3, [8], 1)), input_noise=0.5)
    noise = model.draw_noise(16, 3, torch.Generator().manual_seed(0))
    assert isinstance(noise, TrainingNoise) and noise.input_noise.shape == (16, 3)
    out = training_outputs(model, torch.ones(16, 3), noise)
    out.square().mean().backward()
    assert model.input_noise_raw.grad is not None
    assert model.weight_generator.noise_scale_raw.grad is not None


def test_predictive_mean_averages_the_outputs_of_s_weight_samples():
    hypernet = make_hypernet(shapes=layer_shapes(4, [6], 2))
    model = StochasticMLP(hypernet, input_noise=0.5)
    x = torch.randn(9, 4, dtype=torch.float64)
    mean = model.predictive_mean(x, n_samples=25, seed=7)
    eps = torch.randn((25, 10), generator=torch.Generator().manual_seed(7))
    codes = hypernet.codes(eps, torch.empty(0))
    manual = torch.stack(
        [
            forward_materialised(x, [layer[s].double() for layer in hypernet.materialise(codes)])
            for s in range(25)
        ]
    ).mean(0)
    torch.testing.assert_close(mean, manual)
    assert mean.dtype == torch.float64


def test_predictive_mean_is_chunk_independent(monkeypatch):
    from skhypernet import _model

    model = StochasticMLP(make_hypernet(shapes=layer_shapes(4, [6], 2)), 0.5)
    x = torch.randn(50, 4, dtype=torch.float64)
    full = model.predictive_mean(x, n_samples=30, seed=1)
    monkeypatch.setattr(_model, "PREDICT_CHUNK_BYTES", 8 * 200)
    chunked = model.predictive_mean(x, n_samples=30, seed=1)
    np.testing.assert_allclose(chunked.numpy(), full.numpy(), rtol=1e-12, atol=1e-14)


def test_initial_weight_spread_matches_linear_init():
    hypernet = make_hypernet(shapes=layer_shapes(400, [400], 10), dropout=0.0)
    codes = hypernet.codes(torch.randn(200, 10), torch.empty(0))
    weights = hypernet.materialise(codes)[0][:, :-1]  # (200, 400, 400)
    spread = weights.std(dim=0).mean()
    assert 0.3 / math.sqrt(3 * 400) < spread < 3 / math.sqrt(3 * 400)


def test_prediction_evaluates_bounded_blocks_of_rows(monkeypatch):
    from skhypernet import _model

    model = StochasticMLP(make_hypernet(shapes=layer_shapes(4, [6], 2)), 0.5)
    x = torch.randn(1000, 4, dtype=torch.float64)
    monkeypatch.setattr(_model, "PREDICT_CHUNK_BYTES", 8 * 7 * 30 * 20)
    block_sizes = []
    forward = _model._forward_samples

    def recording_forward(rows, layers):
        block_sizes.append(rows.shape[0] * layers[0].shape[0])
        return forward(rows, layers)

    monkeypatch.setattr(_model, "_forward_samples", recording_forward)
    model.predictive_mean(x, n_samples=30, seed=0)
    assert len(block_sizes) > 1 and max(block_sizes) <= 30 * 20
