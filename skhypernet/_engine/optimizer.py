"""Adam over one flat buffer holding the parameters of R models of one shape."""

import torch
from torch.optim.adam import adam as functional_adam

from .parameters import Parameters


def update_adam(flat, flat_grad, exp_avg, exp_avg_sq, step, adam_settings, fused):
    """torch's functional Adam on one tensor (``step`` is incremented).

    ``adam_settings`` is ``[learning rate, beta_1, beta_2, epsilon]``.
    """
    functional_adam(
        [flat],
        [flat_grad],
        [exp_avg],
        [exp_avg_sq],
        [],
        [step],
        fused=fused,
        amsgrad=False,
        beta1=adam_settings[1],
        beta2=adam_settings[2],
        lr=adam_settings[0],
        weight_decay=0.0,
        eps=adam_settings[3],
        maximize=False,
    )


_fused_adam = {}


def fused_adam_available(device_type):
    """Whether this torch has a fused Adam kernel for the device type (CPU: torch 2.4 on)."""
    if device_type not in _fused_adam:
        tensors = [torch.zeros(1, device=device_type) for _ in range(4)]
        try:
            update_adam(
                *tensors, torch.zeros((), device=device_type), [1e-3, 0.9, 0.999, 1e-8], True
            )
            _fused_adam[device_type] = True
        except RuntimeError:
            _fused_adam[device_type] = False
    return _fused_adam[device_type]


class FlatOptimizer:
    """Adam over one flat buffer holding all parameters of R models of one shape.

    On creation the models' parameters are copied into the buffer and made
    views of it, so the models and the optimiser share memory.  Every
    parameter is one block holding the R models' tensors side by side;
    :attr:`values` and :attr:`grads` are :class:`Parameters` of those
    ``(R, ...)`` blocks of the parameter and gradient buffers.  Adding an
    optimiser option touches this class alone.

    Parameters
    ----------
    models : list of StochasticMLP
        Models of one architecture (the replicas trained in lockstep).
    learning_rate : float
    states : list of dict or None, optional
        Adam's state of each replica to resume from, laid out as
        :meth:`replica_state` gives it (None, or a None entry: fresh moments).
        The step count is shared: the first given replica's is taken.
    beta_1, beta_2, epsilon : float
        Adam's decay rates of the moment estimates and its numerical floor.
    alpha : float
        L2 penalty of the parameters the weight generator names in
        ``penalised_masks`` (the main network's weights, not its biases).
    """

    def __init__(
        self,
        models,
        learning_rate,
        states=None,
        *,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        alpha=0.0,
    ):
        self.learning_rate = learning_rate
        self.adam_settings = [float(learning_rate), float(beta_1), float(beta_2), float(epsilon)]
        self.n_replicas = len(models)
        structure = Parameters.of(models[0])
        per_model = [Parameters.of(model).tensors() for model in models]
        if any(
            [t.shape for t in tensors] != [t.shape for t in per_model[0]] for tensors in per_model
        ):
            raise ValueError("Models trained in lockstep must have one architecture.")
        first = per_model[0][0]
        size = self.n_replicas * sum(t.numel() for t in per_model[0])
        self.flat = torch.empty(size, device=first.device, dtype=first.dtype)
        self.flat_grad = torch.zeros_like(self.flat)
        #: The first model's tensors: the layout of every buffer like :attr:`flat`.
        self.structure = structure
        self.values = structure.blocks_of(self.flat, self.n_replicas)
        self.grads = structure.blocks_of(self.flat_grad, self.n_replicas)
        #: The KL term's latest gradient estimate, added to every step's
        #: gradient until the next (see ``KL_REFRESH_STEPS``); made on first use.
        self.flat_kl_grad = self.kl_grads = None
        for replica, tensors in enumerate(per_model):
            for parameter, block in zip(tensors, self.values.tensors()):
                view = block[replica].view(parameter.shape)
                view.copy_(parameter.detach())
                parameter.data = view
        generator = models[0].weight_generator
        frozen = generator.frozen_masks()
        penalised = generator.penalised_masks() if alpha > 0 else {}
        #: 0 where a gradient is dropped before each update; None when none is.
        self.trainable = self._masks(frozen, 1.0) if frozen else None
        #: ``alpha`` where the L2 penalty applies, else 0; None without a penalty.
        self.penalty = self._masks(penalised, 0.0, alpha) if penalised else None
        self.fused = fused_adam_available(first.device.type)
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.step_count = torch.zeros((), device=first.device, dtype=first.dtype)
        given = [(r, state) for r, state in enumerate(states or ()) if state is not None]
        for replica, state in given:
            for name, moment in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                saved = state[name].to(first.device)
                offset = 0
                for block in self.blocks(moment):
                    size = block[replica].numel()
                    block[replica].copy_(saved[offset : offset + size].view_as(block[replica]))
                    offset += size
        if given:
            self.step_count.copy_(given[0][1]["step"])

    def kl_gradient_buffers(self):
        """The buffer of the KL term's gradient estimate, flat and as
        :class:`Parameters` blocks, made on the first call."""
        if self.flat_kl_grad is None:
            self.flat_kl_grad = torch.zeros_like(self.flat)
            self.kl_grads = self.structure.blocks_of(self.flat_kl_grad, self.n_replicas)
        return self.flat_kl_grad, self.kl_grads

    def _masks(self, masks, default, scale=1.0):
        """A buffer like :attr:`flat`: ``scale * masks[parameter]`` on the
        blocks of the parameters in ``masks`` (of the first model), else ``default``."""
        buffer = torch.full_like(self.flat, default)
        for parameter, block in zip(self.structure.tensors(), self.blocks(buffer)):
            if parameter in masks:
                block.copy_(scale * masks[parameter].reshape(block.shape[1:]))
        return buffer

    def step(self, n_rows):
        """Update the parameters from the gradients of batches of ``n_rows`` rows."""
        if self.penalty is not None:
            # The L2 penalty of scikit-learn's MLP: alpha / 2 * ||w||^2 per batch rows.
            self.flat_grad.addcmul_(self.penalty, self.flat, value=1.0 / n_rows)
        if self.trainable is not None:
            self.flat_grad.mul_(self.trainable)
        update_adam(
            self.flat,
            self.flat_grad,
            self.exp_avg,
            self.exp_avg_sq,
            self.step_count,
            self.adam_settings,
            self.fused,
        )

    def flush_denormals(self):
        """Set Adam's moments below the smallest normal float to zero.

        :func:`flushed_denormals` does that on the calling thread only; the
        part of the update that torch's other threads compute keeps its
        denormals, which appear wherever a gradient stays zero (dead units:
        most of a collapsed hypernetwork's heads) and make its arithmetic
        many times slower.  Zero moments stay zero while the gradient does.
        """
        tiny = torch.finfo(self.flat.dtype).tiny
        for moment in (self.exp_avg, self.exp_avg_sq):
            moment.masked_fill_(moment.abs() < tiny, 0.0)

    def finite_replicas(self):
        """Whether each replica's parameters are all finite: list of bool."""
        finite = torch.ones(self.n_replicas, dtype=torch.bool, device=self.flat.device)
        for block in self.values.tensors():
            finite &= torch.isfinite(block).flatten(1).all(1)
        return finite.tolist()

    def snapshot(self):
        """A copy of the parameters, for :meth:`restore`."""
        return self.flat.clone()

    def restore(self, snapshot, reset_moments, replica=None):
        """Put back the parameters of ``snapshot``; optionally restart Adam.

        With ``replica``, only that replica's parameters (and moments).  The
        step count is shared: it restarts only when every replica does.
        """
        if replica is None:
            self.flat.copy_(snapshot)
            if reset_moments:
                self.exp_avg.zero_()
                self.exp_avg_sq.zero_()
                self.step_count.zero_()
            return
        for target, source in zip(self.values.tensors(), self.blocks(snapshot)):
            target[replica].copy_(source[replica])
        if reset_moments:
            for buffer in (self.exp_avg, self.exp_avg_sq):
                for block in self.blocks(buffer):
                    block[replica].zero_()

    def blocks(self, buffer):
        """The ``(R, ...)`` blocks of a buffer laid out like :attr:`flat`."""
        return self.structure.blocks_of(buffer, self.n_replicas).tensors()

    def replica_state(self, replica):
        """Adam's state of one replica, laid out as a one-model optimiser's
        :meth:`state_dict`."""
        state = {
            name: torch.cat([block[replica].flatten() for block in self.blocks(moment)])
            for name, moment in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq))
        }
        return {**state, "step": self.step_count.clone()}
