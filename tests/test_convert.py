"""framecast convert: OpenSTL ConvLSTM weights give OpenSTL's frames; models that cannot convert
say which can; notes name what was dropped."""

import pytest
import torch

import framecast
from framecast.cli import main
from framecast.convert import convert
from framecast.errors import FramecastError
from framecast.layers import patchify, unpatchify
from tests.reference.convlstm_openstl import OpenSTLConvLSTM

P, H, NC, NF = 4, 16, 3, 3


def test_openstl_convlstm_converts_to_its_frames(tmp_path, capsys):
    torch.manual_seed(0)
    ref = OpenSTLConvLSTM(P * P, [8, 6], 3).eval()
    src = tmp_path / "openstl_convlstm.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()}}, src)
    out = tmp_path / "converted.ckpt"
    args = ["convert", str(src), "--from", "openstl", "--model", "convlstm", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "dropped cell_list.*.conv_last" in printed and "dropped cell_list.*.conv_o" in printed
    model = framecast.load_checkpoint(out)
    assert model.config.num_hidden == (8, 6) and model.config.forget_bias == 0.0
    kept = sum(p.numel() for p in model.parameters())
    unused = sum(p.numel() for n, p in ref.named_parameters() if ".conv_o." in n or ".conv_last." in n)
    assert kept == sum(p.numel() for p in ref.parameters()) - unused

    torch.manual_seed(1)
    clip = torch.rand(2, NC + NF, 1, H, H)
    with torch.no_grad():
        want = ref(patchify(clip, P), torch.zeros(2, NF - 1), NC)
        got = model(clip[:, :NC], NF).frames
    torch.testing.assert_close(patchify(got, P), want, atol=1e-5, rtol=1e-5)

    # training: a random mask over the future input steps (the context ones are true frames)
    m = torch.bernoulli(torch.full((2, NF - 1), 0.5), generator=torch.Generator().manual_seed(2))
    mask = torch.cat([torch.ones(2, NC - 1), m], dim=1)  # framecast's (B, T-2) layout
    with torch.no_grad():
        want = ref(patchify(clip, P), m, NC)
        got = model.train()(clip[:, :NC], NF, future=clip[:, NC:], mask=mask).frames
    torch.testing.assert_close(got, unpatchify(want, P), atol=1e-5, rtol=1e-5)


def test_openstl_convlstm_is_not_predrnn_and_back(tmp_path):
    torch.manual_seed(0)
    src = tmp_path / "c.pth"
    torch.save(OpenSTLConvLSTM(P * P, [4], 3).state_dict(), src)
    with pytest.raises(FramecastError, match="not a PredRNN network"):
        convert(src, "openstl", "predrnn", tmp_path / "x.ckpt")


def test_models_without_conversion_name_those_with(tmp_path):
    src = tmp_path / "c.pth"
    torch.save({"w": torch.zeros(1)}, src)
    with pytest.raises(FramecastError, match=r"conversion is available for .*convlstm.*not 'maxvit'"):
        convert(src, "openstl", "maxvit", tmp_path / "x.ckpt")
    with pytest.raises(FramecastError, match="--from official is the official PredRNN code"):
        convert(src, "official", "convlstm", tmp_path / "x.ckpt")
