"""Dropout whose CPU mask costs a fraction of torch's CPU ``bernoulli_``."""

from __future__ import annotations

import math

import torch
from torch import nn

_LEVELS = 2**16  # the keep test compares 16 random bits with a threshold


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str):
    """Boolean mask of ``shape``, each entry ``True`` with probability ``1 - p``.

    On the CPU the mask is read from random 64-bit words, 16 bits an entry: torch's CPU
    ``bernoulli_`` draws one number per entry and took about a fifth of q_phi's training step
    (``docs/benchmarks.md``). ``p`` is rounded to a multiple of ``2**-16``
    (:func:`~scbignn_tools.nn.quantized_p`). Elsewhere it is ``torch.rand(shape) >= p``. Both
    draw from torch's global generator, so ``torch.manual_seed`` fixes them.
    """
    device = torch.device(device)
    if device.type != "cpu":
        return torch.rand(shape, device=device) >= p
    n = math.prod(shape)
    words = torch.randint(-(2**63), 2**63 - 1, (-(-n // 4),), dtype=torch.int64)
    bits = words.view(torch.int16)[:n].view(shape)
    return bits >= round(p * _LEVELS) - _LEVELS // 2


def keep_scale(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str):
    """Inverted-dropout factors of ``shape``: 0 with probability ``p``, else ``1 / (1 - p)``.

    :func:`~scbignn_tools.nn.keep_mask` as float32, scaled so that the expectation is 1, with
    ``p`` as :func:`~scbignn_tools.nn.quantized_p` realises it; what :class:`~scbignn_tools.nn.Dropout` and
    :meth:`~scbignn_tools.data.StandardizedExpression.dropout` multiply by.
    """
    p = quantized_p(p, device)
    return keep_mask(shape, p, device).to(torch.float32) / (1 - p)


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
        return x * keep_scale(x.shape, self.p, x.device).to(x.dtype)
