"""The convolutional LSTM cell (Shi et al. 2015, https://arxiv.org/abs/1506.04214)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell without peepholes: one convolution over ``[x, h]`` gives all four gates.

    ``conv([x, h])`` equals ``conv_x(x) + conv_h(h)`` with the weights stacked along the input
    channels, so this is the fused form of the two-convolution cell.

        i, f, o, g = split(conv([x, h]))
        c' = s(f + forget_bias) * c + s(i) * tanh(g)
        h' = s(o) * tanh(c')

    Args:
        in_channels: channels of the input ``x``.
        hidden: channels of ``h`` and ``c``.
        kernel_size: square kernel, padded to keep the size.
        bias: whether the gate convolution has a bias.
        forget_bias: constant added to the forget gate before the sigmoid (1.0 in the
            PredRNN family's code, 0.0 in the seq2seq tutorial).
        fused: one convolution over ``[x, h]`` (default). ``False`` runs the reference code's
            two convolutions ``conv_x(x) + conv_h(h)`` from the same weights (same result to
            float rounding, same state dict); for benchmarks that compare the two.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        kernel_size: int,
        *,
        bias: bool = True,
        forget_bias: float = 0.0,
        fused: bool = True,
    ):
        super().__init__()
        self.hidden = hidden
        self.forget_bias = forget_bias
        self.fused = fused
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2, bias=bias)

    def init_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Zero (h, c) for an input ``x`` of shape (B, C, H, W), in ``x``'s memory layout."""
        b, _, h, w = x.shape
        zeros = x.new_zeros(b, self.hidden, h, w).contiguous(memory_format=layout_of(x))
        return zeros, zeros

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        h, c = self.init_state(x) if state is None else state
        if self.fused:
            gates = self.conv(torch.cat([x, h], dim=1))
        else:
            w, pad, n = self.conv.weight, self.conv.padding, x.shape[1]
            gates = F.conv2d(x, w[:, :n], self.conv.bias, padding=pad) + F.conv2d(h, w[:, n:], padding=pad)
        i, f, o, g = gates.chunk(4, dim=1)  # 4 x (B, hidden, H, W)
        c = torch.sigmoid(f + self.forget_bias) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def layout_of(x: Tensor) -> torch.memory_format:
    """channels_last if ``x`` is stored that way, else the default layout."""
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
