"""An independent, deliberately plain PhyDNet organised the way OpenSTL's PhyDNet_Model is, for the
parity and conversion tests, re-implemented from:

* Le Guen & Thome, "Disentangling Physical Dynamics from Unknown Factors for Unsupervised Video
  Prediction", CVPR 2020, https://arxiv.org/abs/2003.01460 (PhyCell: prediction
  h~ = h + Phi(h) with Phi a k x k convolution, a group norm and a 1x1 convolution, then the
  gated correction h = h~ + K * (E(u) - h~); a ConvLSTM beside it; the two decoded and summed;
  the moment loss that pulls the moment matrix of filter (i, j) of Phi to the indicator of (i, j));
* OpenSTL, https://github.com/chengtan9907/OpenSTL: openstl/modules/phydnet_modules.py
  (PhyCell_Cell, PhyCell, PhyD_ConvLSTM_Cell, PhyD_ConvLSTM, dcgan_conv / dcgan_upconv,
  encoder_E, decoder_D, encoder_specific, decoder_specific, PhyD_EncoderRNN, K2M),
  openstl/models/phydnet_model.py (the cells registered on the model *and* inside the encoder,
  the k2m buffers, the training loop with one teacher-forcing coin per batch) and
  openstl/methods/phydnet.py (the constraint tensor).

The widths that OpenSTL hard-codes are arguments here (OpenSTL's values as defaults) so that the
tests can build it small. ``forward`` also returns the predictions and the moment term, and takes
an optional (B, T-2) teacher-forcing mask that generalises OpenSTL's per-batch coin, so that the
tests can check the mask framecast honours. It shares no code with framecast.
"""

import math
import random

import torch
import torch.nn as nn


class PhyCell_Cell(nn.Module):
    def __init__(self, input_dim, F_hidden_dim, kernel_size):
        super().__init__()
        self.input_dim = input_dim
        self.F = nn.Sequential()
        self.F.add_module("conv1", nn.Conv2d(input_dim, F_hidden_dim, kernel_size, padding=kernel_size // 2))
        self.F.add_module("bn1", nn.GroupNorm(7, F_hidden_dim))
        self.F.add_module("conv2", nn.Conv2d(F_hidden_dim, input_dim, 1))
        self.convgate = nn.Conv2d(2 * input_dim, input_dim, 3, padding=1)

    def forward(self, x, hidden):
        K = torch.sigmoid(self.convgate(torch.cat([x, hidden], dim=1)))
        hidden_tilde = hidden + self.F(hidden)  # prediction
        return hidden_tilde + K * (x - hidden_tilde)  # correction


class PhyCell(nn.Module):
    def __init__(self, input_dim, F_hidden_dims, kernel_size):
        super().__init__()
        self.input_dim = input_dim
        self.cell_list = nn.ModuleList(PhyCell_Cell(input_dim, f, kernel_size) for f in F_hidden_dims)
        self.H = []

    def forward(self, input_, first_timestep=False):
        if first_timestep:
            b, _, h, w = input_.shape
            self.H = [input_.new_zeros(b, self.input_dim, h, w) for _ in self.cell_list]
        for j, cell in enumerate(self.cell_list):
            self.H[j] = cell(input_ if j == 0 else self.H[j - 1], self.H[j])
        return self.H, self.H


class PhyD_ConvLSTM_Cell(nn.Module):
    def __init__(self, input_dim, hidden_dim, kernel_size):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.conv = nn.Conv2d(input_dim + hidden_dim, 4 * hidden_dim, kernel_size, padding=kernel_size // 2)

    def forward(self, x, hidden):
        h_cur, c_cur = hidden
        cc_i, cc_f, cc_o, cc_g = torch.split(self.conv(torch.cat([x, h_cur], dim=1)), self.hidden_dim, dim=1)
        c_next = torch.sigmoid(cc_f) * c_cur + torch.sigmoid(cc_i) * torch.tanh(cc_g)
        h_next = torch.sigmoid(cc_o) * torch.tanh(c_next)
        return h_next, c_next


class PhyD_ConvLSTM(nn.Module):
    def __init__(self, input_dim, hidden_dims, kernel_size):
        super().__init__()
        self.hidden_dims = hidden_dims
        ins = [input_dim, *hidden_dims[:-1]]
        self.cell_list = nn.ModuleList(PhyD_ConvLSTM_Cell(a, b, kernel_size) for a, b in zip(ins, hidden_dims))
        self.H, self.C = [], []

    def forward(self, input_, first_timestep=False):
        if first_timestep:
            b, _, h, w = input_.shape
            self.H = [input_.new_zeros(b, n, h, w) for n in self.hidden_dims]
            self.C = [input_.new_zeros(b, n, h, w) for n in self.hidden_dims]
        for j, cell in enumerate(self.cell_list):
            self.H[j], self.C[j] = cell(input_ if j == 0 else self.H[j - 1], (self.H[j], self.C[j]))
        return (self.H, self.C), self.H


class dcgan_conv(nn.Module):
    def __init__(self, nin, nout, stride):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nin, nout, 3, stride=stride, padding=1), nn.GroupNorm(16, nout), nn.LeakyReLU(0.2)
        )

    def forward(self, x):
        return self.main(x)


class dcgan_upconv(nn.Module):
    def __init__(self, nin, nout, stride):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nin, nout, 3, stride=stride, padding=1, output_padding=1 if stride == 2 else 0),
            nn.GroupNorm(16, nout),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x):
        return self.main(x)


class encoder_E(nn.Module):
    def __init__(self, nc, nf, patch_size):
        super().__init__()
        self.c1 = dcgan_conv(nc, nf, 2)
        self.c2 = dcgan_conv(nf, nf, 1)
        self.c3 = dcgan_conv(nf, 2 * nf, patch_size // 2)

    def forward(self, x):
        return self.c3(self.c2(self.c1(x)))


class decoder_D(nn.Module):
    def __init__(self, nc, nf, patch_size):
        super().__init__()
        s = patch_size // 2
        self.upc1 = dcgan_upconv(2 * nf, nf, 2)
        self.upc2 = dcgan_upconv(nf, nf, 1)
        self.upc3 = nn.ConvTranspose2d(nf, nc, 3, stride=s, padding=1, output_padding=1 if s == 2 else 0)

    def forward(self, x):
        return self.upc3(self.upc2(self.upc1(x)))


class encoder_specific(nn.Module):
    def __init__(self, nc, nf):
        super().__init__()
        self.c1 = dcgan_conv(nc, nf, 1)
        self.c2 = dcgan_conv(nf, nf, 1)

    def forward(self, x):
        return self.c2(self.c1(x))


class decoder_specific(nn.Module):
    def __init__(self, nc, nf):
        super().__init__()
        self.upc1 = dcgan_upconv(nf, nf, 1)
        self.upc2 = dcgan_upconv(nf, nc, 1)

    def forward(self, x):
        return self.upc2(self.upc1(x))


class PhyD_EncoderRNN(nn.Module):
    def __init__(self, phycell, convcell, in_channel, nf, patch_size):
        super().__init__()
        dim = 2 * nf
        self.encoder_E = encoder_E(in_channel, nf, patch_size)
        self.encoder_Ep = encoder_specific(dim, dim)
        self.encoder_Er = encoder_specific(dim, dim)
        self.decoder_Dp = decoder_specific(dim, dim)
        self.decoder_Dr = decoder_specific(dim, convcell.hidden_dims[-1])
        self.decoder_D = decoder_D(in_channel, nf, patch_size)
        self.phycell = phycell
        self.convcell = convcell

    def forward(self, input, first_timestep=False, decoding=False):
        input = self.encoder_E(input)
        input_phys = None if decoding else self.encoder_Ep(input)
        input_conv = self.encoder_Er(input)
        hidden1, output1 = self.phycell(input_phys, first_timestep)
        hidden2, output2 = self.convcell(input_conv, first_timestep)
        decoded_Dp = self.decoder_Dp(output1[-1])
        decoded_Dr = self.decoder_Dr(output2[-1])
        out_phys = torch.sigmoid(self.decoder_D(decoded_Dp))  # partial reconstructions, never in the loss
        out_conv = torch.sigmoid(self.decoder_D(decoded_Dr))
        output_image = torch.sigmoid(self.decoder_D(decoded_Dp + decoded_Dr))
        return out_phys, hidden1, output_image, out_phys, out_conv


def moment_matrix(size):
    """M[i, j] = (j - (size - 1) // 2) ** i / i!: row i takes the i-th moment of a stencil."""
    M = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        for j in range(size):
            M[i, j] = (j - (size - 1) // 2) ** i / math.factorial(i)
    return M


class K2M(nn.Module):
    """Kernel (..., l0, l1) -> moment matrix M0 k M1^T, with OpenSTL's buffers (the inverses unused)."""

    def __init__(self, shape):
        super().__init__()
        for j, size in enumerate(shape):
            M = moment_matrix(size)
            self.register_buffer(f"_M{j}", M)
            self.register_buffer(f"_invM{j}", torch.linalg.inv(M))

    def forward(self, k):
        out = torch.tensordot(k, self._M1, dims=([k.dim() - 1], [1]))  # (..., l0, a1)
        out = torch.tensordot(out, self._M0, dims=([k.dim() - 2], [1]))  # (..., a1, a0)
        return out.transpose(-1, -2)


def get_constraints(k=7):
    """OpenSTL's target: filter number k * i + j should have the moment matrix 1 at (i, j), else 0."""
    constraints = torch.zeros(k * k, k, k)
    ind = 0
    for i in range(k):
        for j in range(k):
            constraints[ind, i, j] = 1
            ind += 1
    return constraints


class PhyDNet_Model(nn.Module):
    """OpenSTL's PhyDNet_Model: phycell and convcell are attributes of the model *and* of the
    encoder (so its state dict holds them twice), plus the k2m buffers."""

    def __init__(
        self,
        pre_seq_length,
        aft_seq_length,
        in_channel=1,
        patch_size=4,
        nf=32,
        F_hidden_dims=(49,),
        phy_kernel=7,
        hidden_dims=(128, 128, 64),
        lstm_kernel=3,
    ):
        super().__init__()
        self.pre_seq_length = pre_seq_length
        self.aft_seq_length = aft_seq_length
        self.phycell = PhyCell(2 * nf, list(F_hidden_dims), phy_kernel)
        self.convcell = PhyD_ConvLSTM(2 * nf, list(hidden_dims), lstm_kernel)
        self.encoder = PhyD_EncoderRNN(self.phycell, self.convcell, in_channel, nf, patch_size)
        self.k2m = K2M([phy_kernel, phy_kernel])
        self.criterion = nn.MSELoss()

    def moment_term(self, constraints):
        cell = self.encoder.phycell.cell_list[0]
        term = 0
        for b in range(cell.input_dim):
            m = self.k2m(cell.F.conv1.weight[:, b, :, :].double()).float()
            term = term + self.criterion(m, constraints)
        return term

    def forward(self, input_tensor, target_tensor, constraints, teacher_forcing_ratio=0.0, mask=None):
        """OpenSTL's training pass. Returns (loss, the T-1 predictions, the moment term); the loss
        sums the T-1 frame MSEs and the moment term. ``mask`` (B, T-2), if given, replaces
        OpenSTL's policy (true context frames, one coin per batch for all future inputs) with
        input_t = m_t * true_t + (1 - m_t) * prediction_t at input steps 1..T-2."""
        loss = 0
        outputs = []
        for ei in range(self.pre_seq_length - 1):
            x = input_tensor[:, ei]
            if mask is not None and ei > 0:
                m = mask[:, ei - 1, None, None, None]
                x = m * x + (1 - m) * outputs[-1]
            _, _, output_image, _, _ = self.encoder(x, ei == 0)
            loss += self.criterion(output_image, input_tensor[:, ei + 1])
            outputs.append(output_image)

        decoder_input = input_tensor[:, -1]
        if mask is not None and self.pre_seq_length > 1:
            m = mask[:, self.pre_seq_length - 2, None, None, None]
            decoder_input = m * decoder_input + (1 - m) * outputs[-1]
        use_teacher_forcing = random.random() < teacher_forcing_ratio
        for di in range(self.aft_seq_length):
            _, _, output_image, _, _ = self.encoder(decoder_input, self.pre_seq_length == 1 and di == 0)
            target = target_tensor[:, di]
            loss += self.criterion(output_image, target)
            outputs.append(output_image)
            if mask is not None:
                if di < self.aft_seq_length - 1:
                    m = mask[:, self.pre_seq_length - 1 + di, None, None, None]
                    decoder_input = m * target + (1 - m) * output_image
            elif use_teacher_forcing:
                decoder_input = target
            else:
                decoder_input = output_image

        moment = self.moment_term(constraints)
        return loss + moment, torch.stack(outputs, dim=1), moment

    @torch.no_grad()
    def inference(self, input_tensor, target_tensor, constraints):
        """OpenSTL's test pass: (the future predictions, the loss as in ``forward``)."""
        loss = 0
        for ei in range(self.pre_seq_length - 1):
            _, _, output_image, _, _ = self.encoder(input_tensor[:, ei], ei == 0)
            loss += self.criterion(output_image, input_tensor[:, ei + 1])
        decoder_input = input_tensor[:, -1]
        predictions = []
        for di in range(self.aft_seq_length):
            _, _, output_image, _, _ = self.encoder(decoder_input, False, False)
            decoder_input = output_image
            predictions.append(output_image)
            loss += self.criterion(output_image, target_tensor[:, di])
        return torch.stack(predictions, dim=1), loss + self.moment_term(constraints)
