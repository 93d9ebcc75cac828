"""An independent, deliberately plain MIM written the way OpenSTL organises it, for the parity
tests of ``framecast.models.mim``. It shares no code with framecast.

Re-implemented from:

* Wang et al., "Memory In Memory: A Predictive Neural Network for Learning Higher-Order
  Non-Stationarity from Spatiotemporal Dynamics", CVPR 2019, https://arxiv.org/abs/1811.07490
  (an ST-LSTM first layer, then MIM blocks whose MIM-N LSTM reads differences of hidden states
  and whose MIM-S LSTM replaces the forget gate of the temporal memory);
* OpenSTL (https://github.com/chengtan9907/OpenSTL): openstl/models/mim_model.py (the loop, the
  two mask layouts, the discarded MIM-N call at t = 0), openstl/modules/mim_modules.py
  (``MIMBlock`` with ``convlstm_c`` kept on the module and detached, ``MIMN`` with a
  ``conv_last`` it never uses) and openstl/modules/predrnn_modules.py (the ST-LSTM cell).

Like OpenSTL, ``MIMBlock.convlstm_c`` (the MIM-S cell state) lives on the module: it carries
over from one call to the next; set it to None (``reset()``) for a fresh sequence.
"""

import torch
import torch.nn as nn


def reshape_patch(img, p):
    """(B, T, H, W, C) -> (B, T, H/p, W/p, p*p*C), OpenSTL's reshape_patch."""
    b, t, h, w, c = img.shape
    a = img.reshape(b, t, h // p, p, w // p, p, c)
    a = a.permute(0, 1, 2, 4, 3, 5, 6)
    return a.reshape(b, t, h // p, w // p, p * p * c)


def conv_seq(cin, cout, k, stride, layer_norm, height, width):
    mods = [nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=k // 2, bias=False)]
    if layer_norm:
        mods.append(nn.LayerNorm([cout, height, width]))
    return nn.Sequential(*mods)


class SpatioTemporalLSTMCell(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm):
        super().__init__()
        self.num_hidden = num_hidden
        args = (filter_size, stride, layer_norm, height, width)
        self.conv_x = conv_seq(in_channel, num_hidden * 7, *args)
        self.conv_h = conv_seq(num_hidden, num_hidden * 4, *args)
        self.conv_m = conv_seq(num_hidden, num_hidden * 3, *args)
        self.conv_o = conv_seq(num_hidden * 2, num_hidden, *args)
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, kernel_size=1, bias=False)

    def forward(self, x_t, h_t, c_t, m_t):
        nh = self.num_hidden
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = torch.split(self.conv_x(x_t), nh, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h_t), nh, dim=1)
        i_m, f_m, g_m = torch.split(self.conv_m(m_t), nh, dim=1)
        c_new = torch.sigmoid(f_x + f_h + 1.0) * c_t + torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h)
        m_new = torch.sigmoid(f_xp + f_m + 1.0) * m_t + torch.sigmoid(i_xp + i_m) * torch.tanh(g_xp + g_m)
        mem = torch.cat((c_new, m_new), 1)
        o_t = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        return o_t * torch.tanh(self.conv_last(mem)), c_new, m_new


def peephole_lstm(x, h_t, c_t, conv_h_concat, conv_x_concat, ct_weight, oc_weight, nh):
    """The LSTM shared by OpenSTL's MIMN.forward and MIMBlock.MIMS (gates i, g, f, o)."""
    if h_t is None:
        h_t = torch.zeros_like(x)
    if c_t is None:
        c_t = torch.zeros_like(x)
    i_h, g_h, f_h, o_h = torch.split(conv_h_concat(h_t), nh, dim=1)
    i_c, f_c = torch.split(c_t.repeat(1, 2, 1, 1) * ct_weight, nh, dim=1)
    i_x, g_x, f_x, o_x = torch.split(conv_x_concat(x), nh, dim=1)
    i_ = torch.sigmoid(i_h + i_c + i_x)
    f_ = torch.sigmoid(f_h + f_c + f_x + 1.0)
    c_new = f_ * c_t + i_ * torch.tanh(g_h + g_x)
    h_new = torch.sigmoid(o_h + o_x + c_new * oc_weight) * torch.tanh(c_new)
    return h_new, c_new


class MIMBlock(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm):
        super().__init__()
        self.convlstm_c = None
        self.num_hidden = num_hidden
        self.ct_weight = nn.Parameter(torch.zeros(num_hidden * 2, height, width))
        self.oc_weight = nn.Parameter(torch.zeros(num_hidden, height, width))
        args = (filter_size, stride, layer_norm, height, width)
        self.conv_t_cc = conv_seq(in_channel, num_hidden * 3, *args)
        self.conv_s_cc = conv_seq(num_hidden, num_hidden * 4, *args)
        self.conv_x_cc = conv_seq(num_hidden, num_hidden * 4, *args)
        self.conv_h_concat = conv_seq(num_hidden, num_hidden * 4, *args)
        self.conv_x_concat = conv_seq(num_hidden, num_hidden * 4, *args)
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, kernel_size=1, bias=False)

    def MIMS(self, x, h_t, c_t):
        return peephole_lstm(
            x, h_t, c_t, self.conv_h_concat, self.conv_x_concat, self.ct_weight, self.oc_weight, self.num_hidden
        )

    def forward(self, x, diff_h, h, c, m):
        diff_h = torch.zeros_like(x) if diff_h is None else diff_h
        nh = self.num_hidden
        i_s, g_s, f_s, o_s = torch.split(self.conv_s_cc(m), nh, dim=1)
        i_t, g_t, o_t = torch.split(self.conv_t_cc(h), nh, dim=1)
        i_x, g_x, f_x, o_x = torch.split(self.conv_x_cc(x), nh, dim=1)
        i = torch.sigmoid(i_x + i_t)
        i_ = torch.sigmoid(i_x + i_s)
        g = torch.tanh(g_x + g_t)
        g_ = torch.tanh(g_x + g_s)
        f_ = torch.sigmoid(f_x + f_s + 1.0)
        o = torch.sigmoid(o_x + o_t + o_s)
        new_m = f_ * m + i_ * g_
        prev = None if self.convlstm_c is None else self.convlstm_c.detach()  # OpenSTL detaches it
        c, self.convlstm_c = self.MIMS(diff_h, c, prev)
        new_c = c + i * g
        new_h = o * torch.tanh(self.conv_last(torch.cat((new_c, new_m), 1)))
        return new_h, new_c, new_m


class MIMN(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm):
        super().__init__()
        self.num_hidden = num_hidden
        self.ct_weight = nn.Parameter(torch.zeros(num_hidden * 2, height, width))
        self.oc_weight = nn.Parameter(torch.zeros(num_hidden, height, width))
        args = (filter_size, stride, layer_norm, height, width)
        self.conv_h_concat = conv_seq(in_channel, num_hidden * 4, *args)
        self.conv_x_concat = conv_seq(in_channel, num_hidden * 4, *args)
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, kernel_size=1, bias=False)  # never used

    def forward(self, x, h_t, c_t):
        return peephole_lstm(
            x, h_t, c_t, self.conv_h_concat, self.conv_x_concat, self.ct_weight, self.oc_weight, self.num_hidden
        )


class MIM_Model(nn.Module):
    """frames (B, T, H/p, W/p, p*p*C) and mask (B, T', H/p, W/p, p*p*C) in, as OpenSTL."""

    def __init__(self, num_hidden, frame_channel, height, width, filter_size, layer_norm, stride=1):
        super().__init__()
        self.num_layers = len(num_hidden)
        self.num_hidden = num_hidden
        layers, diffs = [], []
        for i in range(self.num_layers):
            in_channel = frame_channel if i == 0 else num_hidden[i - 1]
            cls = SpatioTemporalLSTMCell if i == 0 else MIMBlock
            layers.append(cls(in_channel, num_hidden[i], height, width, filter_size, stride, layer_norm))
        for i in range(self.num_layers - 1):
            diffs.append(MIMN(num_hidden[i], num_hidden[i + 1], height, width, filter_size, stride, layer_norm))
        self.stlstm_layer = nn.ModuleList(layers)
        self.stlstm_layer_diff = nn.ModuleList(diffs)
        self.conv_last = nn.Conv2d(num_hidden[-1], frame_channel, kernel_size=1, bias=False)

    def reset(self):
        for layer in self.stlstm_layer[1:]:
            layer.convlstm_c = None

    def forward(self, frames_tensor, mask_true, pre_seq_length, aft_seq_length, reverse_scheduled_sampling):
        frames = frames_tensor.permute(0, 1, 4, 2, 3).contiguous()
        mask_true = mask_true.permute(0, 1, 4, 2, 3).contiguous()
        batch, _, _, height, width = frames.shape
        h_t, c_t, hidden_diff, cell_diff = [], [], [], []
        for i in range(self.num_layers):
            zeros = torch.zeros(batch, self.num_hidden[i], height, width)
            h_t.append(zeros)
            c_t.append(zeros)
            hidden_diff.append(None)
            cell_diff.append(None)
        st_memory = torch.zeros(batch, self.num_hidden[0], height, width)
        next_frames = []
        x_gen = None
        for t in range(pre_seq_length + aft_seq_length - 1):
            if reverse_scheduled_sampling:
                if t == 0:
                    net = frames[:, t]
                else:
                    net = mask_true[:, t - 1] * frames[:, t] + (1 - mask_true[:, t - 1]) * x_gen
            elif t < pre_seq_length:
                net = frames[:, t]
            else:
                m = mask_true[:, t - pre_seq_length]
                net = m * frames[:, t] + (1 - m) * x_gen
            preh = h_t[0]
            h_t[0], c_t[0], st_memory = self.stlstm_layer[0](net, h_t[0], c_t[0], st_memory)
            for i in range(1, self.num_layers):
                if t > 0:
                    inp = h_t[i - 1] - preh if i == 1 else hidden_diff[i - 2]
                    hidden_diff[i - 1], cell_diff[i - 1] = self.stlstm_layer_diff[i - 1](
                        inp, hidden_diff[i - 1], cell_diff[i - 1]
                    )
                else:
                    self.stlstm_layer_diff[i - 1](torch.zeros_like(h_t[i - 1]), None, None)  # result discarded
                h_t[i], c_t[i], st_memory = self.stlstm_layer[i](
                    h_t[i - 1], hidden_diff[i - 1], h_t[i], c_t[i], st_memory
                )
            x_gen = self.conv_last(h_t[-1])
            next_frames.append(x_gen)
        return torch.stack(next_frames, dim=0).permute(1, 0, 3, 4, 2).contiguous()  # (B, T-1, H, W, C)
