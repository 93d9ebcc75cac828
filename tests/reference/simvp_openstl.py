"""An independent, deliberately plain SimVP (v1 IncepU, v2 gSTA) and TAU written the way OpenSTL
organises them (its classes, nesting and state-dict names: ``enc.enc.{i}.conv.conv.weight``,
``dec.dec.{i}.conv.conv.0.weight``, ``hid.enc.{i}.block.mlp.dwconv.dwconv.weight``, ...), with
timm's ``DropPath`` and OpenSTL's stochastic-depth schedule, re-implemented for the parity tests
from:

* Gao et al., "SimVP: Simpler yet Better Video Prediction", CVPR 2022,
  https://arxiv.org/abs/2206.05099 (encoder, Inception-UNet translator, decoder);
* Tan et al., "SimVP: Towards Simple yet Powerful Spatiotemporal Predictive Learning", arXiv
  2022, https://arxiv.org/abs/2211.12509 (the gSTA block);
* Tan et al., "Temporal Attention Unit: Towards Efficient Spatiotemporal Predictive Learning",
  CVPR 2023, https://arxiv.org/abs/2206.12126 (the TAU block, the differential divergence loss);
* OpenSTL, https://github.com/chengtan9907/OpenSTL: openstl/models/simvp_model.py,
  openstl/modules/simvp_modules.py, openstl/modules/layers/van.py (MixMlp),
  openstl/methods/simvp.py (``_predict``: slicing and rolling) and tau.py (``diff_div_reg``).

It shares no code with framecast.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride, padding, upsampling=False):
        super().__init__()
        if upsampling:
            self.conv = nn.Sequential(nn.Conv2d(cin, cout * 4, kernel_size, 1, padding), nn.PixelShuffle(2))
        else:
            self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding)
        self.norm = nn.GroupNorm(2, cout)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class ConvSC(nn.Module):
    def __init__(self, cin, cout, kernel_size=3, downsampling=False, upsampling=False):
        super().__init__()
        stride = 2 if downsampling else 1
        padding = (kernel_size - stride + 1) // 2
        self.conv = BasicConv2d(cin, cout, kernel_size, stride, padding, upsampling)

    def forward(self, x):
        return self.conv(x)


def sampling_generator(n, reverse=False):
    s = [False, True] * (n // 2)
    s = s[:n]
    return list(reversed(s)) if reverse else s


class Encoder(nn.Module):
    def __init__(self, cin, chid, n_s, k):
        super().__init__()
        s = sampling_generator(n_s)
        layers = [ConvSC(cin, chid, k, downsampling=s[0])]
        for d in s[1:]:
            layers.append(ConvSC(chid, chid, k, downsampling=d))
        self.enc = nn.Sequential(*layers)

    def forward(self, x):
        enc1 = self.enc[0](x)
        latent = enc1
        for i in range(1, len(self.enc)):
            latent = self.enc[i](latent)
        return latent, enc1


class Decoder(nn.Module):
    def __init__(self, chid, cout, n_s, k):
        super().__init__()
        s = sampling_generator(n_s, reverse=True)
        self.dec = nn.Sequential(*[ConvSC(chid, chid, k, upsampling=u) for u in s])
        self.readout = nn.Conv2d(chid, cout, 1)

    def forward(self, hid, enc1):
        for i in range(len(self.dec) - 1):
            hid = self.dec[i](hid)
        y = self.dec[-1](hid + enc1)
        return self.readout(y)


class GroupConv2d(nn.Module):
    def __init__(self, cin, cout, kernel_size, padding, groups):
        super().__init__()
        if cin % groups != 0:
            groups = 1
        self.conv = nn.Conv2d(cin, cout, kernel_size, 1, padding, groups=groups)
        self.norm = nn.GroupNorm(groups, cout)
        self.activate = nn.LeakyReLU(0.2)

    def forward(self, x):
        return self.activate(self.norm(self.conv(x)))


class gInception_ST(nn.Module):
    def __init__(self, cin, chid, cout, incep_ker=(3, 5, 7, 11), groups=8):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, chid, 1)
        self.layers = nn.Sequential(*[GroupConv2d(chid, cout, k, k // 2, groups) for k in incep_ker])

    def forward(self, x):
        x = self.conv1(x)
        y = 0
        for layer in self.layers:
            y = y + layer(x)
        return y


class MidIncepNet(nn.Module):
    def __init__(self, cin, chid, n2):
        super().__init__()
        self.N2 = n2
        enc = [gInception_ST(cin, chid // 2, chid)]
        for _ in range(1, n2):
            enc.append(gInception_ST(chid, chid // 2, chid))
        dec = [gInception_ST(chid, chid // 2, chid)]
        for _ in range(1, n2 - 1):
            dec.append(gInception_ST(2 * chid, chid // 2, chid))
        dec.append(gInception_ST(2 * chid, chid // 2, cin))
        self.enc = nn.Sequential(*enc)
        self.dec = nn.Sequential(*dec)

    def forward(self, x):
        b, t, c, h, w = x.shape
        z = x.reshape(b, t * c, h, w)
        skips = []
        for i in range(self.N2):
            z = self.enc[i](z)
            if i < self.N2 - 1:
                skips.append(z)
        z = self.dec[0](z)
        for i in range(1, self.N2):
            z = self.dec[i](torch.cat([z, skips[-i]], dim=1))
        return z.reshape(b, t, c, h, w)


def _lka_sizes(kernel_size, dilation):
    d_k = 2 * dilation - 1
    dd_k = kernel_size // dilation + ((kernel_size // dilation) % 2 - 1)
    return d_k, (d_k - 1) // 2, dd_k, dilation * (dd_k - 1) // 2


class AttentionModule(nn.Module):
    def __init__(self, dim, kernel_size, dilation=3):
        super().__init__()
        d_k, d_p, dd_k, dd_p = _lka_sizes(kernel_size, dilation)
        self.conv0 = nn.Conv2d(dim, dim, d_k, padding=d_p, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, dd_k, padding=dd_p, groups=dim, dilation=dilation)
        self.conv1 = nn.Conv2d(dim, 2 * dim, 1)

    def forward(self, x):
        fg = self.conv1(self.conv_spatial(self.conv0(x)))
        f_x, g_x = torch.split(fg, fg.shape[1] // 2, dim=1)
        return torch.sigmoid(g_x) * f_x


class SpatialAttention(nn.Module):
    def __init__(self, d_model, kernel_size=21):
        super().__init__()
        self.proj_1 = nn.Conv2d(d_model, d_model, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = AttentionModule(d_model, kernel_size)
        self.proj_2 = nn.Conv2d(d_model, d_model, 1)

    def forward(self, x):
        shortcut = x.clone()
        x = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return x + shortcut


class TemporalAttentionModule(nn.Module):
    def __init__(self, dim, kernel_size, dilation=3, reduction=16):
        super().__init__()
        d_k, d_p, dd_k, dd_p = _lka_sizes(kernel_size, dilation)
        self.conv0 = nn.Conv2d(dim, dim, d_k, padding=d_p, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, dd_k, padding=dd_p, groups=dim, dilation=dilation)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.reduction = max(dim // reduction, 4)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(dim, dim // self.reduction, bias=False),
            nn.ReLU(True),
            nn.Linear(dim // self.reduction, dim, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        u = x.clone()
        f_x = self.conv1(self.conv_spatial(self.conv0(x)))
        b, c = x.shape[:2]
        se = self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)
        return se * f_x * u


class TemporalAttention(SpatialAttention):
    def __init__(self, d_model, kernel_size=21):
        super().__init__(d_model, kernel_size)
        self.spatial_gating_unit = TemporalAttentionModule(d_model, kernel_size)


class DWConv(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x):
        return self.dwconv(x)


class MixMlp(nn.Module):
    def __init__(self, in_features, hidden_features, drop=0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.dwconv = DWConv(hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_features, in_features, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class GASubBlock(nn.Module):
    def __init__(self, dim, kernel_size=21, mlp_ratio=4.0, drop=0.0, drop_path=0.1, init_value=1e-2):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim, kernel_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = MixMlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(init_value * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1.unsqueeze(-1).unsqueeze(-1) * self.attn(self.norm1(x)))
        x = x + self.drop_path(self.layer_scale_2.unsqueeze(-1).unsqueeze(-1) * self.mlp(self.norm2(x)))
        return x


class TAUSubBlock(GASubBlock):
    def __init__(self, dim, kernel_size=21, mlp_ratio=4.0, drop=0.0, drop_path=0.1, init_value=1e-2):
        super().__init__(dim, kernel_size, mlp_ratio, drop, drop_path, init_value)
        self.attn = TemporalAttention(dim, kernel_size)


class MetaBlock(nn.Module):
    def __init__(self, cin, cout, model_type, mlp_ratio, drop, drop_path):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        block = TAUSubBlock if model_type == "tau" else GASubBlock
        self.block = block(cin, kernel_size=21, mlp_ratio=mlp_ratio, drop=drop, drop_path=drop_path)
        if cin != cout:
            self.reduction = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        z = self.block(x)
        return z if self.in_channels == self.out_channels else self.reduction(z)


class MidMetaNet(nn.Module):
    def __init__(self, cin, chid, n2, model_type, mlp_ratio=4.0, drop=0.0, drop_path=0.1):
        super().__init__()
        self.N2 = n2
        dpr = [x.item() for x in torch.linspace(1e-2, drop_path, n2)]
        layers = [MetaBlock(cin, chid, model_type, mlp_ratio, drop, dpr[0])]
        for i in range(1, n2 - 1):
            layers.append(MetaBlock(chid, chid, model_type, mlp_ratio, drop, dpr[i]))
        layers.append(MetaBlock(chid, cin, model_type, mlp_ratio, drop, drop_path))
        self.enc = nn.Sequential(*layers)

    def forward(self, x):
        b, t, c, h, w = x.shape
        z = x.reshape(b, t * c, h, w)
        for i in range(self.N2):
            z = self.enc[i](z)
        return z.reshape(b, t, c, h, w)


class SimVP_Model(nn.Module):
    def __init__(
        self,
        in_shape,
        hid_S=16,
        hid_T=256,
        N_S=4,
        N_T=4,
        model_type="gSTA",
        mlp_ratio=8.0,
        drop=0.0,
        drop_path=0.0,
        spatio_kernel_enc=3,
        spatio_kernel_dec=3,
    ):
        super().__init__()
        t, c, _, _ = in_shape
        model_type = model_type.lower()
        self.enc = Encoder(c, hid_S, N_S, spatio_kernel_enc)
        self.dec = Decoder(hid_S, c, N_S, spatio_kernel_dec)
        if model_type == "incepu":
            self.hid = MidIncepNet(t * hid_S, hid_T, N_T)
        else:
            self.hid = MidMetaNet(t * hid_S, hid_T, N_T, model_type, mlp_ratio, drop, drop_path)

    def forward(self, x_raw):
        b, t, c, h, w = x_raw.shape
        embed, skip = self.enc(x_raw.view(b * t, c, h, w))
        _, c_, h_, w_ = embed.shape
        hid = self.hid(embed.view(b, t, c_, h_, w_)).reshape(b * t, c_, h_, w_)
        return self.dec(hid, skip).reshape(b, t, c, h, w)


def openstl_predict(model, batch_x, aft_seq_length):
    """OpenSTL's ``SimVP._predict``: slice when fewer frames are wanted, roll whole passes when more."""
    pre = batch_x.shape[1]
    if aft_seq_length <= pre:
        return model(batch_x)[:, :aft_seq_length]
    preds, cur = [], batch_x.clone()
    for _ in range(aft_seq_length // pre):
        cur = model(cur)
        preds.append(cur)
    if aft_seq_length % pre:
        cur = model(cur)
        preds.append(cur[:, : aft_seq_length % pre])
    return torch.cat(preds, dim=1)


def diff_div_reg(pred_y, batch_y, tau=0.1, eps=1e-12):
    """TAU's differential divergence regulariser (openstl/methods/tau.py)."""
    b, t = pred_y.shape[:2]
    if t <= 2:
        return 0
    gap_p = (pred_y[:, 1:] - pred_y[:, :-1]).reshape(b, t - 1, -1)
    gap_b = (batch_y[:, 1:] - batch_y[:, :-1]).reshape(b, t - 1, -1)
    sp = F.softmax(gap_p / tau, -1)
    sb = F.softmax(gap_b / tau, -1)
    return (sp * torch.log(sp / (sb + eps) + eps)).mean()
