"""An independent, deliberately plain PredRNN / PredRNN-V2 written the way the official
PyTorch code is organised (channels-last patched frames in, ``net_param`` state dict names,
separate ``conv_x/h/m/o`` sequentials, the official mask indexing), re-implemented for the
parity tests from:

* the ST-LSTM unit equations (gates i, f, g from x and H; i', f', g' from x and the
  spatiotemporal memory M; o from x, H and [C, M]; H = o * tanh(conv1x1([C, M]))) of Wang et al.,
  "PredRNN: Recurrent Neural Networks for Predictive Learning using Spatiotemporal LSTMs",
  NeurIPS 2017, https://papers.nips.cc/paper/6689, with the zigzag flow of M across layers;
* the memory decoupling loss (mean |cosine similarity| of the adapted increments delta_C and
  delta_M, weighted by beta) and reverse scheduled sampling of Wang et al., "PredRNN: A
  Recurrent Neural Network for Spatiotemporal Predictive Learning", TPAMI 2022,
  https://arxiv.org/abs/2103.09504;
* the official code, https://github.com/thuml/predrnn-pytorch: core/layers/
  SpatioTemporalLSTMCell.py and SpatioTemporalLSTMCell_v2.py (forget bias +1, layer norm over
  (C, H, W)), core/models/predrnn.py and predrnn_v2.py (mask indexing, adapter, decoupling loss),
  core/utils/preprocess.py (reshape_patch).

It shares no code with framecast.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def reshape_patch(img, p):
    """(B, T, H, W, C) -> (B, T, H/p, W/p, p*p*C), as the official preprocess does."""
    b, t, h, w, c = img.shape
    a = img.reshape(b, t, h // p, p, w // p, p, c)
    a = a.permute(0, 1, 2, 4, 3, 5, 6)
    return a.reshape(b, t, h // p, w // p, p * p * c)


class STCell(nn.Module):
    def __init__(self, in_channel, num_hidden, width, filter_size, layer_norm):
        super().__init__()
        pad = filter_size // 2
        self.num_hidden = num_hidden

        def seq(cin, cout):
            mods = [nn.Conv2d(cin, cout, filter_size, 1, pad, bias=False)]
            if layer_norm:
                mods.append(nn.LayerNorm([cout, width, width]))
            return nn.Sequential(*mods)

        self.conv_x = seq(in_channel, num_hidden * 7)
        self.conv_h = seq(num_hidden, num_hidden * 4)
        self.conv_m = seq(num_hidden, num_hidden * 3)
        self.conv_o = seq(num_hidden * 2, num_hidden)
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, 1, 1, 0, bias=False)

    def forward(self, x_t, h_t, c_t, m_t):
        x_concat = self.conv_x(x_t)
        h_concat = self.conv_h(h_t)
        m_concat = self.conv_m(m_t)
        nh = self.num_hidden
        i_x, f_x, g_x, i_x_p, f_x_p, g_x_p, o_x = torch.split(x_concat, nh, dim=1)
        i_h, f_h, g_h, o_h = torch.split(h_concat, nh, dim=1)
        i_m, f_m, g_m = torch.split(m_concat, nh, dim=1)
        i_t = torch.sigmoid(i_x + i_h)
        f_t = torch.sigmoid(f_x + f_h + 1.0)
        g_t = torch.tanh(g_x + g_h)
        delta_c = i_t * g_t
        c_new = f_t * c_t + delta_c
        i_t_p = torch.sigmoid(i_x_p + i_m)
        f_t_p = torch.sigmoid(f_x_p + f_m + 1.0)
        g_t_p = torch.tanh(g_x_p + g_m)
        delta_m = i_t_p * g_t_p
        m_new = f_t_p * m_t + delta_m
        mem = torch.cat((c_new, m_new), 1)
        o_t = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o_t * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new, delta_c, delta_m


class OfficialRNN(nn.Module):
    """frames (B, T, H/p, W/p, p*p*C) and mask (B, T', H/p, W/p, p*p*C) in, like the official code."""

    def __init__(self, num_hidden, frame_channel, width, filter_size, layer_norm, v2, beta=0.1):
        super().__init__()
        self.num_layers = len(num_hidden)
        self.num_hidden = num_hidden
        self.v2 = v2
        self.beta = beta
        self.cell_list = nn.ModuleList(
            STCell(frame_channel if i == 0 else num_hidden[i - 1], num_hidden[i], width, filter_size, layer_norm)
            for i in range(self.num_layers)
        )
        self.conv_last = nn.Conv2d(num_hidden[-1], frame_channel, 1, 1, 0, bias=False)
        if v2:
            self.adapter = nn.Conv2d(num_hidden[0], num_hidden[0], 1, 1, 0, bias=False)

    def forward(self, frames_tensor, mask_true, input_length, total_length, reverse_scheduled_sampling):
        frames = frames_tensor.permute(0, 1, 4, 2, 3).contiguous()
        mask_true = mask_true.permute(0, 1, 4, 2, 3).contiguous()
        batch, _, _, height, width = frames.shape
        h_t, c_t, dcl, dml, decouple = [], [], [], [], []
        for i in range(self.num_layers):
            zeros = torch.zeros(batch, self.num_hidden[i], height, width)
            h_t.append(zeros)
            c_t.append(zeros)
            dcl.append(zeros)
            dml.append(zeros)
        memory = torch.zeros(batch, self.num_hidden[0], height, width)
        next_frames = []
        x_gen = None
        for t in range(total_length - 1):
            if reverse_scheduled_sampling:
                if t == 0:
                    net = frames[:, t]
                else:
                    net = mask_true[:, t - 1] * frames[:, t] + (1 - mask_true[:, t - 1]) * x_gen
            else:
                if t < input_length:
                    net = frames[:, t]
                else:
                    net = mask_true[:, t - input_length] * frames[:, t] + (1 - mask_true[:, t - input_length]) * x_gen
            h_t[0], c_t[0], memory, dc, dm = self.cell_list[0](net, h_t[0], c_t[0], memory)
            dcl[0] = F.normalize(self.adapter(dc).view(dc.shape[0], dc.shape[1], -1), dim=2) if self.v2 else None
            dml[0] = F.normalize(self.adapter(dm).view(dm.shape[0], dm.shape[1], -1), dim=2) if self.v2 else None
            for i in range(1, self.num_layers):
                h_t[i], c_t[i], memory, dc, dm = self.cell_list[i](h_t[i - 1], h_t[i], c_t[i], memory)
                if self.v2:
                    dcl[i] = F.normalize(self.adapter(dc).view(dc.shape[0], dc.shape[1], -1), dim=2)
                    dml[i] = F.normalize(self.adapter(dm).view(dm.shape[0], dm.shape[1], -1), dim=2)
            x_gen = self.conv_last(h_t[self.num_layers - 1])
            next_frames.append(x_gen)
            if self.v2:
                for i in range(self.num_layers):
                    decouple.append(torch.mean(torch.abs(torch.cosine_similarity(dcl[i], dml[i], dim=2))))
        next_frames = torch.stack(next_frames, dim=0).permute(1, 0, 3, 4, 2).contiguous()
        decouple_loss = torch.mean(torch.stack(decouple)) if self.v2 else torch.zeros(())
        return next_frames, decouple_loss
