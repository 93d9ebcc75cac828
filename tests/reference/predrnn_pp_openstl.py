"""An independent, deliberately plain PredRNN++ written the way OpenSTL organises it, for the
parity tests: channels-last patched frames in and out, OpenSTL's module and state-dict names
(``cell_list.{i}.conv_x.0.weight``, ``gradient_highway.z_concat.0.weight``, ``conv_last.weight``),
one ``nn.Sequential`` per gate convolution, the per-cell ``conv_o`` that OpenSTL builds but never
uses, and both of OpenSTL's mask indexings (scheduled and reverse scheduled sampling).

Re-implemented from:

* the causal LSTM and gradient highway unit of Wang et al., "PredRNN++: Towards A Resolution
  of the Deep-in-Time Dilemma in Spatiotemporal Predictive Learning", ICML 2018,
  https://arxiv.org/abs/1804.06300;
* OpenSTL (chengtan9907/OpenSTL): openstl/modules/predrnnpp_modules.py (gate orders, forget
  bias +1, tanh output gate, GHU weights U(-0.001, 0.001)), openstl/models/predrnnpp_model.py
  (the GHU between the first two cells, the zigzag memory, the mask indexing).

One departure from OpenSTL, on purpose: with ``layer_norm`` OpenSTL's GHU normalises over
(nh, H, W) after its 2 nh-channel convolutions and so cannot run; ``ghu_norm_channels=None``
(the default) normalises over (2 nh, H, W), and ``ghu_norm_channels=nh`` builds OpenSTL's
literal (unrunnable) layout for the tests that show it.

It shares no code with framecast.
"""

import torch
import torch.nn as nn


def reshape_patch(img, p):
    """(B, T, H, W, C) -> (B, T, H/p, W/p, p*p*C), as OpenSTL's reshape_patch does."""
    b, t, h, w, c = img.shape
    a = img.reshape(b, t, h // p, p, w // p, p, c)
    a = a.permute(0, 1, 2, 4, 3, 5, 6)
    return a.reshape(b, t, h // p, w // p, p * p * c)


def gate_conv(cin, cout, filter_size, stride, norm_shape):
    mods = [nn.Conv2d(cin, cout, kernel_size=filter_size, stride=stride, padding=filter_size // 2, bias=False)]
    if norm_shape is not None:
        mods.append(nn.LayerNorm(norm_shape))
    return nn.Sequential(*mods)


class CausalLSTMCell(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm):
        super().__init__()
        self.num_hidden = num_hidden

        def ln(c):
            return [c, height, width] if layer_norm else None

        self.conv_x = gate_conv(in_channel, num_hidden * 7, filter_size, stride, ln(num_hidden * 7))
        self.conv_h = gate_conv(num_hidden, num_hidden * 4, filter_size, stride, ln(num_hidden * 4))
        self.conv_c = gate_conv(num_hidden, num_hidden * 3, filter_size, stride, ln(num_hidden * 3))
        self.conv_m = gate_conv(num_hidden, num_hidden * 3, filter_size, stride, ln(num_hidden * 3))
        self.conv_o = gate_conv(num_hidden * 2, num_hidden, filter_size, stride, ln(num_hidden))  # never used
        self.conv_c2m = gate_conv(num_hidden, num_hidden * 4, filter_size, stride, ln(num_hidden * 4))
        self.conv_om = gate_conv(num_hidden, num_hidden, filter_size, stride, ln(num_hidden))
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, x_t, h_t, c_t, m_t):
        nh = self.num_hidden
        i_x, f_x, g_x, i_xp, f_xp, g_xp, o_x = torch.split(self.conv_x(x_t), nh, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h_t), nh, dim=1)
        i_c, f_c, g_c = torch.split(self.conv_c(c_t), nh, dim=1)
        i_m, f_m, m_m = torch.split(self.conv_m(m_t), nh, dim=1)

        i_t = torch.sigmoid(i_x + i_h + i_c)
        f_t = torch.sigmoid(f_x + f_h + f_c + 1.0)
        g_t = torch.tanh(g_x + g_h + g_c)
        c_new = f_t * c_t + i_t * g_t

        i_c2, g_c2, f_c2, o_c2 = torch.split(self.conv_c2m(c_new), nh, dim=1)
        i_tp = torch.sigmoid(i_xp + i_m + i_c2)
        f_tp = torch.sigmoid(f_xp + f_m + f_c2 + 1.0)
        g_tp = torch.tanh(g_xp + g_c2)
        m_new = f_tp * torch.tanh(m_m) + i_tp * g_tp

        o_t = torch.tanh(o_x + o_h + o_c2 + self.conv_om(m_new))
        h_new = o_t * torch.tanh(self.conv_last(torch.cat((c_new, m_new), 1)))
        return h_new, c_new, m_new


class GHU(nn.Module):
    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride, layer_norm, ghu_norm_channels=None):
        super().__init__()
        self.num_hidden = num_hidden
        norm = [ghu_norm_channels or 2 * num_hidden, height, width] if layer_norm else None
        self.z_concat = gate_conv(in_channel, num_hidden * 2, filter_size, stride, norm)
        self.x_concat = gate_conv(in_channel, num_hidden * 2, filter_size, stride, norm)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.uniform_(m.weight, -0.001, 0.001)

    def forward(self, x, z):
        if z is None:
            z = torch.zeros_like(x)
        gates = self.x_concat(x) + self.z_concat(z)
        p, u = torch.split(gates, self.num_hidden, dim=1)
        p = torch.tanh(p)
        u = torch.sigmoid(u)
        return u * p + (1 - u) * z


class PredRNNppModel(nn.Module):
    """frames (B, T, H/p, W/p, p*p*C) and mask_true (B, T', H/p, W/p, p*p*C) in, as OpenSTL's."""

    def __init__(
        self,
        num_hidden,
        in_shape,
        patch_size,
        filter_size,
        pre_seq_length,
        aft_seq_length,
        layer_norm=False,
        reverse_scheduled_sampling=0,
        stride=1,
        ghu_norm_channels=None,
    ):
        super().__init__()
        _, c, h, w = in_shape
        self.frame_channel = patch_size * patch_size * c
        self.num_layers = len(num_hidden)
        self.num_hidden = num_hidden
        self.pre_seq_length = pre_seq_length
        self.aft_seq_length = aft_seq_length
        self.reverse_scheduled_sampling = reverse_scheduled_sampling
        height, width = h // patch_size, w // patch_size
        self.gradient_highway = GHU(
            num_hidden[0], num_hidden[0], height, width, filter_size, stride, layer_norm, ghu_norm_channels
        )
        self.cell_list = nn.ModuleList(
            CausalLSTMCell(
                self.frame_channel if i == 0 else num_hidden[i - 1],
                num_hidden[i],
                height,
                width,
                filter_size,
                stride,
                layer_norm,
            )
            for i in range(self.num_layers)
        )
        self.conv_last = nn.Conv2d(num_hidden[-1], self.frame_channel, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, frames_tensor, mask_true):
        frames = frames_tensor.permute(0, 1, 4, 2, 3).contiguous()
        mask_true = mask_true.permute(0, 1, 4, 2, 3).contiguous()
        batch, height, width = frames.shape[0], frames.shape[3], frames.shape[4]
        h_t, c_t = [], []
        for i in range(self.num_layers):
            zeros = torch.zeros(batch, self.num_hidden[i], height, width)
            h_t.append(zeros)
            c_t.append(zeros)
        memory = torch.zeros(batch, self.num_hidden[0], height, width)
        z_t = None
        x_gen = None
        next_frames = []
        for t in range(self.pre_seq_length + self.aft_seq_length - 1):
            if self.reverse_scheduled_sampling == 1:
                if t == 0:
                    net = frames[:, t]
                else:
                    net = mask_true[:, t - 1] * frames[:, t] + (1 - mask_true[:, t - 1]) * x_gen
            elif t < self.pre_seq_length:
                net = frames[:, t]
            else:
                k = t - self.pre_seq_length
                net = mask_true[:, k] * frames[:, t] + (1 - mask_true[:, k]) * x_gen
            h_t[0], c_t[0], memory = self.cell_list[0](net, h_t[0], c_t[0], memory)
            z_t = self.gradient_highway(h_t[0], z_t)
            h_t[1], c_t[1], memory = self.cell_list[1](z_t, h_t[1], c_t[1], memory)
            for i in range(2, self.num_layers):
                h_t[i], c_t[i], memory = self.cell_list[i](h_t[i - 1], h_t[i], c_t[i], memory)
            x_gen = self.conv_last(h_t[-1])
            next_frames.append(x_gen)
        next_frames = torch.stack(next_frames, dim=0).permute(1, 0, 3, 4, 2).contiguous()
        loss = nn.functional.mse_loss(next_frames, frames_tensor[:, 1:])
        return next_frames, loss
