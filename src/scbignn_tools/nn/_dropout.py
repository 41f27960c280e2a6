"""Dropout whose CPU mask costs a fraction of torch's CPU ``bernoulli_``."""

from __future__ import annotations

import math

import torch
from torch import nn

_LEVELS = 2**16  # the keep test compares 16 random bits with a threshold


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str):
    """Boolean mask of ``shape``, each entry ``True`` with probability ``1 - p``.

    On the CPU the mask is read from random 64-bit words, 16 bits an entry: torch's CPU
    ``bernoulli_`` draws one number per entry and took a quarter of q_phi's training step
    (``docs/benchmarks.md``). ``p`` is rounded to a multiple of ``2**-16``
    (:func:`~scbignn_tools.nn.quantized_p`). Elsewhere it is ``torch.rand(shape) >= p``. Both draw from torch's
    global generator, so ``torch.manual_seed`` fixes them.
    """
    device = torch.device(device)
    if device.type != "cpu":
        return torch.rand(shape, device=device) >= p
    n = math.prod(shape)
    words = torch.randint(-(2**63), 2**63 - 1, (-(-n // 4),), dtype=torch.int64)
    bits = words.view(torch.int16)[:n].view(shape)
    return bits >= round(p * _LEVELS) - _LEVELS // 2


def quantized_p(p: float, device: torch.device | str) -> float:
    """The drop probability :func:`~scbignn_tools.nn.keep_mask` realises for ``p`` on ``device``."""
    return round(p * _LEVELS) / _LEVELS if torch.device(device).type == "cpu" else p


class Dropout(nn.Dropout):
    r""":class:`torch.nn.Dropout` with :func:`~scbignn_tools.nn.keep_mask`'s faster CPU mask.

    During training each entry of the input is zeroed with probability :math:`p` and the
    others are scaled by :math:`1/(1 - p)`; in evaluation mode it is the identity. Off the
    CPU it is :class:`torch.nn.Dropout` itself.

    Shapes: input and output of any shape, the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero and rescale entries of ``x`` (training) or return ``x`` (evaluation)."""
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.p >= 1:
            return super().forward(x)
        p = quantized_p(self.p, x.device)
        return x * keep_mask(x.shape, p, x.device) * (1 / (1 - p))
