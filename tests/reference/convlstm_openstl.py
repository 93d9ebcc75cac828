"""An independent, plain ConvLSTM organised the way OpenSTL's ConvLSTM_Model is, for the
conversion tests, re-implemented from:

* Shi et al., "Convolutional LSTM Network: A Machine Learning Approach for Precipitation
  Nowcasting", NeurIPS 2015, https://arxiv.org/abs/1506.04214 (gates i, f, g, o from x and H);
* OpenSTL, https://github.com/chengtan9907/OpenSTL: openstl/modules/convlstm_modules.py
  (per cell ``conv_x`` and ``conv_h`` sequentials, gates split as (i, f, g, o), no forget bias
  added in the forward pass, plus ``conv_o`` and ``conv_last`` that the forward never uses) and
  openstl/models/convlstm_model.py (stacked cells, 1x1 ``conv_last`` head, frame feedback).

It shares no code with framecast.
"""

import torch
import torch.nn as nn


class OpenSTLConvLSTMCell(nn.Module):
    def __init__(self, cin, nh, k):
        super().__init__()
        self.nh = nh
        self.conv_x = nn.Sequential(nn.Conv2d(cin, 4 * nh, k, padding=k // 2, bias=False))
        self.conv_h = nn.Sequential(nn.Conv2d(nh, 4 * nh, k, padding=k // 2, bias=False))
        self.conv_o = nn.Sequential(nn.Conv2d(2 * nh, nh, k, padding=k // 2, bias=False))  # never used
        self.conv_last = nn.Conv2d(2 * nh, nh, 1, bias=False)  # never used

    def forward(self, x, h, c):
        i_x, f_x, g_x, o_x = torch.split(self.conv_x(x), self.nh, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h), self.nh, dim=1)
        i = torch.sigmoid(i_x + i_h)
        f = torch.sigmoid(f_x + f_h)
        g = torch.tanh(g_x + g_h)
        c = f * c + i * g
        h = torch.sigmoid(o_x + o_h) * torch.tanh(c)
        return h, c


class OpenSTLConvLSTM(nn.Module):
    def __init__(self, frame_channels, widths, k):
        super().__init__()
        self.widths = widths
        ins = [frame_channels, *widths[:-1]]
        self.cell_list = nn.ModuleList(OpenSTLConvLSTMCell(a, b, k) for a, b in zip(ins, widths))
        self.conv_last = nn.Conv2d(widths[-1], frame_channels, 1, bias=False)

    def forward(self, frames, mask, n_context):
        """frames: (B, T, C', H', W') patched clip; mask: (B, T - n_context - 1) 0/1 per future
        input step (OpenSTL's non-reverse layout). Returns the T-1 next-frame predictions."""
        b, t_total, _, hh, ww = frames.shape
        h = [frames.new_zeros(b, n, hh, ww) for n in self.widths]
        c = [frames.new_zeros(b, n, hh, ww) for n in self.widths]
        out, x_gen = [], None
        for t in range(t_total - 1):
            if t < n_context:
                net = frames[:, t]
            else:
                m = mask[:, t - n_context, None, None, None]
                net = m * frames[:, t] + (1 - m) * x_gen
            for i, cell in enumerate(self.cell_list):
                h[i], c[i] = cell(net if i == 0 else h[i - 1], h[i], c[i])
            x_gen = self.conv_last(h[-1])
            out.append(x_gen)
        return torch.stack(out, dim=1)
