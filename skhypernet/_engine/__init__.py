"""The training loop shared by every estimator.

The engine knows nothing about scikit-learn.  It trains a
:class:`~skhypernet._model.StochasticMLP` (hypernetwork or point-estimate
weights) with Adam on shuffled mini-batches and keeps the loss history and
the stopping rule of scikit-learn's MLP.

Speed comes from two choices, measured in ``docs/performance.md``:

- all parameters live in one flat buffer, their gradients in another, so one
  fused Adam call updates everything (:class:`FlatOptimizer`);
- the forward and backward passes are written out by hand
  (:func:`batch_gradients`): no autograd graph, per-row weights never
  materialised, gradients written straight into the flat buffer, and few
  enough operations per step that Python's dispatch stays a small part of a
  batch-1 step.

A loss is one entry of the loss table (:data:`LOSSES`): its value, its
gradient with respect to the network's outputs, and its output width.

The modules, by responsibility: :mod:`.losses` (the loss table),
:mod:`.parameters` (a model's tensors by role), :mod:`.gradients` (the
hand-written step), :mod:`.optimizer` (Adam over the flat buffer),
:mod:`.epochs` (an epoch of all replicas), :mod:`.loop` (the training loop)
and :mod:`.runtime` (threads, interrupts, denormals).

The straightforward formulation, autograd through ``tests/reference.py`` and
``torch.optim.Adam``, lives with the tests, which check the engine against it.
"""

from .epochs import (
    KL_REFRESH_STEPS,
    KL_SAMPLES,
    NOISE_CHUNK_ROWS,
    TrainingData,
    TrainingHistory,
    refresh_steps,
    run_epoch,
)
from .gradients import Batch, Layer, batch_gradients, contracts_inputs_first, kl_gradients
from .loop import (
    DivergenceRollback,
    EpochCallback,
    HistoryRecord,
    Hook,
    Progress,
    StoppingRule,
    TrainingEnd,
    TrainingRun,
    WeightDiffusion,
    kl_scale,
    standard_hooks,
    train,
)
from .losses import CROSS_ENTROPY, GAUSSIAN_NLL, LOSSES, SQUARED_ERROR, Loss
from .optimizer import FlatOptimizer, fused_adam_available
from .parameters import Parameters
from .runtime import flushed_denormals, interrupts_collected, step_flops, threads_for

__all__ = [
    "Batch",
    "batch_gradients",
    "contracts_inputs_first",
    "CROSS_ENTROPY",
    "DivergenceRollback",
    "EpochCallback",
    "FlatOptimizer",
    "flushed_denormals",
    "fused_adam_available",
    "GAUSSIAN_NLL",
    "HistoryRecord",
    "Hook",
    "interrupts_collected",
    "kl_gradients",
    "KL_REFRESH_STEPS",
    "KL_SAMPLES",
    "kl_scale",
    "Layer",
    "Loss",
    "LOSSES",
    "NOISE_CHUNK_ROWS",
    "Parameters",
    "Progress",
    "refresh_steps",
    "run_epoch",
    "SQUARED_ERROR",
    "standard_hooks",
    "step_flops",
    "StoppingRule",
    "threads_for",
    "train",
    "TrainingData",
    "TrainingEnd",
    "TrainingHistory",
    "TrainingRun",
    "WeightDiffusion",
]
