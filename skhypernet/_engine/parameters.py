"""A model's trained tensors by role, and views of flat buffers that stand for them."""

from typing import NamedTuple

import torch


class Parameters(NamedTuple):
    """A model's trained tensors by role (or the views of a flat buffer that
    stand for them, or their gradients).  None marks what a model lacks."""

    input_noise: torch.Tensor | None  # raw softplus scale of the input noise
    noise_scale: torch.Tensor | None  # raw softplus scale of the weight noise
    hidden_weights: list[torch.Tensor]  # hypernetwork hidden layers
    hidden_biases: list[torch.Tensor]
    heads: list[torch.Tensor]  # (C, I + 1, O) per main-network layer

    @property
    def has_codes(self):
        """Whether these are a hypernetwork's (whose weights are linear in codes)."""
        return self.noise_scale is not None

    @classmethod
    def of(cls, model):
        return cls(**model.parameter_groups())

    def tensors(self):
        """The tensors, in a fixed order, without the Nones."""
        singles = [self.input_noise, self.noise_scale]
        return [t for t in singles if t is not None] + [
            *self.hidden_weights,
            *self.hidden_biases,
            *self.heads,
        ]

    def blocks_of(self, buffer, n_replicas):
        """The same structure made of consecutive blocks of ``buffer``, in the
        order of :meth:`tensors`, each holding the tensor of every replica:
        ``(R, *shape)``, with scalars as ``(R, 1, 1)`` and vectors as
        ``(R, 1, length)`` so that they broadcast over rows."""
        offset = 0

        def block(tensor):
            nonlocal offset
            if tensor is None:
                return None
            shape = {0: (1, 1), 1: (1, tensor.numel())}.get(tensor.dim(), tensor.shape)
            size = n_replicas * tensor.numel()
            part = buffer[offset : offset + size].view(n_replicas, *shape)
            offset += size
            return part

        return Parameters(
            block(self.input_noise),
            block(self.noise_scale),
            [block(t) for t in self.hidden_weights],
            [block(t) for t in self.hidden_biases],
            [block(t) for t in self.heads],
        )
