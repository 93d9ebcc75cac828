"""An independent, deliberately plain MAU written the way OpenSTL organises it (channels-last
frames and mask in, a mask over the future inputs only, growing lists of past states sliced to
the last tau, OpenSTL's module names and state-dict keys, including ``merge`` and
``conv_last_sr``, which it builds but never uses), re-implemented for the parity tests from:

* Chang et al., "MAU: A Motion-Aware Unit for Video Prediction and Beyond", NeurIPS 2021,
  https://openreview.net/forum?id=qwtfY-3ibt7: the attention module (softmax over the scaled
  correlations of the current, convolved spatial state with the last tau spatial states weighs
  the last tau temporal states; a sigmoid gate mixes that trend with the previous temporal
  state) and the fusion module (two gated mixes of the convolved temporal and spatial states);
* OpenSTL, https://github.com/chengtan9907/OpenSTL: openstl/models/mau_model.py (encoders,
  decoders, srcnn, state lists, mask indexing), openstl/modules/mau_modules.py (MAUCell: conv +
  LayerNorm over (C, H, W) for conv_t, conv_t_next, conv_s, conv_s_next), openstl/methods/mau.py.

It shares no code with framecast.
"""

import math

import torch
import torch.nn as nn


class RefMAUCell(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, tau, cell_mode):
        super().__init__()
        self.num_hidden = num_hidden
        self.tau = tau
        self.cell_mode = cell_mode
        self.d = num_hidden * height * width
        pad = filter_size // 2

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=filter_size, stride=stride, padding=pad),
                nn.LayerNorm([cout, height, width]),
            )

        self.conv_t = block(in_channel, 3 * num_hidden)
        self.conv_t_next = block(in_channel, num_hidden)
        self.conv_s = block(num_hidden, 3 * num_hidden)
        self.conv_s_next = block(num_hidden, num_hidden)

    def forward(self, T_t, S_t, t_att, s_att):
        # t_att, s_att: (tau, B, C, H, W) stacks of the past states
        s_next = self.conv_s_next(S_t)
        t_next = self.conv_t_next(T_t)
        scores = []
        for i in range(self.tau):
            scores.append((s_att[i] * s_next).sum(dim=(1, 2, 3)) / math.sqrt(self.d))
        scores = torch.stack(scores, dim=0)
        scores = scores.reshape(self.tau, -1, 1, 1, 1)
        attn = torch.softmax(scores, dim=0)
        trend = (t_att * attn).sum(dim=0)
        gate = torch.sigmoid(t_next)
        fused = T_t * gate + (1 - gate) * trend
        t_parts = torch.split(self.conv_t(fused), self.num_hidden, dim=1)
        s_parts = torch.split(self.conv_s(S_t), self.num_hidden, dim=1)
        t_g, t_t, t_s = t_parts
        s_g, s_t, s_s = s_parts
        tg = torch.sigmoid(t_g)
        sg = torch.sigmoid(s_g)
        T_new = tg * t_t + (1 - tg) * s_t
        S_new = sg * s_s + (1 - sg) * t_s
        if self.cell_mode == "residual":
            S_new = S_new + S_t
        return T_new, S_new


class RefMAU(nn.Module):
    """frames (B, T, H, W, C) and mask (B, T - pre_seq_length - 1, H, W, C) in, as OpenSTL's MAU_Model."""

    def __init__(
        self,
        num_hidden,
        img_channel,
        height,
        width,
        filter_size,
        sr_size,
        tau,
        cell_mode="normal",
        model_mode="normal",
        patch_size=1,
    ):
        super().__init__()
        self.num_hidden = num_hidden
        self.num_layers = len(num_hidden)
        self.frame_channel = patch_size * patch_size * img_channel
        self.tau = tau
        self.sr_size = sr_size
        self.model_mode = model_mode
        h = height // patch_size // sr_size
        w = width // patch_size // sr_size
        self.cell_list = nn.ModuleList(
            [
                RefMAUCell(num_hidden[i - 1], num_hidden[i], h, w, filter_size, 1, tau, cell_mode)
                for i in range(self.num_layers)
            ]
        )
        n = int(math.log2(sr_size))
        encoders = []
        first = nn.Sequential()
        first.add_module("encoder_t_conv-1", nn.Conv2d(self.frame_channel, num_hidden[0], 1, 1, 0))
        first.add_module("relu_t_-1", nn.LeakyReLU(0.2))
        encoders.append(first)
        for i in range(n):
            enc = nn.Sequential()
            enc.add_module(f"encoder_t{i}", nn.Conv2d(num_hidden[0], num_hidden[0], 3, 2, 1))
            enc.add_module(f"encoder_t_relu{i}", nn.LeakyReLU(0.2))
            encoders.append(enc)
        self.encoders = nn.ModuleList(encoders)
        decoders = []
        for i in range(n):
            dec = nn.Sequential()
            dec.add_module(
                f"c_decoder{i}",
                nn.ConvTranspose2d(num_hidden[-1], num_hidden[-1], 3, 2, 1, output_padding=1),
            )
            if i < n - 1:
                dec.add_module(f"c_decoder_relu{i}", nn.LeakyReLU(0.2))
            decoders.append(dec)
        self.decoders = nn.ModuleList(decoders)
        self.srcnn = nn.Sequential(nn.Conv2d(num_hidden[-1], self.frame_channel, 1, 1, 0))
        self.merge = nn.Conv2d(num_hidden[-1] * 2, num_hidden[-1], 1, 1, 0)  # never used
        self.conv_last_sr = nn.Conv2d(self.frame_channel * 2, self.frame_channel, 1, 1, 0)  # never used

    def forward(self, frames_tensor, mask_true, pre_seq_length, total_length):
        frames = frames_tensor.permute(0, 1, 4, 2, 3).contiguous()
        mask_true = mask_true.permute(0, 1, 4, 2, 3).contiguous()
        batch = frames.shape[0]
        height = frames.shape[3] // self.sr_size
        width = frames.shape[4] // self.sr_size
        T_pre, S_pre, T_t = [], [], []
        for layer in range(self.num_layers):
            cin = self.num_hidden[layer] if layer == 0 else self.num_hidden[layer - 1]
            T_pre.append([torch.zeros(batch, cin, height, width) for _ in range(self.tau)])
            S_pre.append([torch.zeros(batch, cin, height, width) for _ in range(self.tau)])
        for layer in range(self.num_layers):
            T_t.append(torch.zeros(batch, self.num_hidden[layer], height, width))
        next_frames = []
        x_gen = None
        for t in range(total_length - 1):
            if t < pre_seq_length:
                net = frames[:, t]
            else:
                m = mask_true[:, t - pre_seq_length]
                net = m * frames[:, t] + (1 - m) * x_gen
            feat = net
            encoded = []
            for enc in self.encoders:
                feat = enc(feat)
                encoded.append(feat)
            S_t = feat
            for i in range(self.num_layers):
                t_att = torch.stack(T_pre[i][-self.tau :], dim=0)
                s_att = torch.stack(S_pre[i][-self.tau :], dim=0)
                S_pre[i].append(S_t)
                T_t[i], S_t = self.cell_list[i](T_t[i], S_t, t_att, s_att)
                T_pre[i].append(T_t[i])
            out = S_t
            for i, dec in enumerate(self.decoders):
                out = dec(out)
                if self.model_mode == "recall":
                    out = out + encoded[-2 - i]
            x_gen = self.srcnn(out)
            next_frames.append(x_gen)
        next_frames = torch.stack(next_frames, dim=1)  # (B, T-1, C, H, W)
        loss = nn.functional.mse_loss(next_frames, frames[:, 1:])
        return next_frames, loss
