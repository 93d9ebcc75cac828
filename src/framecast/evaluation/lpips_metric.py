"""LPIPS (Zhang et al. 2018, https://arxiv.org/abs/1801.03924) with AlexNet, as an optional metric.

Needs the ``lpips`` package (``pip install framecast[lpips]``; it ships its linear layers) and
torchvision's AlexNet weights ``alexnet-owt-7be5be79.pth``, which framecast never downloads:
it looks for them where torchvision keeps them (``$TORCH_HOME/hub/checkpoints/``) or at
``$FRAMECAST_ALEXNET``, and loads them with ``weights_only=True``.

Input range: framecast feeds frames scaled to [-1, 1], the range the lpips package expects
(``normalize=True``). The official PredRNN code feeds [0, 1] frames unscaled, so its LPIPS
numbers (e.g. PredRNN-V2's 0.071 on Moving MNIST) are not directly comparable; grey frames are
repeated to three channels in both.
"""

import os
from pathlib import Path

import torch
from torch import Tensor

from framecast.errors import FramecastError

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"


def alexnet_path() -> Path:
    """Where the AlexNet weights are expected."""
    if os.environ.get("FRAMECAST_ALEXNET"):
        return Path(os.environ["FRAMECAST_ALEXNET"])
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


class LPIPS:
    """Callable scorer: ``scorer(pred, target) -> (B, T)`` LPIPS distances.

    Raises:
        FramecastError: when the package or the AlexNet weights are missing (one line naming the
            file and where it goes).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        try:
            import lpips
        except ImportError:
            raise FramecastError("LPIPS needs the lpips package: pip install 'framecast[lpips]'") from None
        path = alexnet_path()
        if not path.is_file():
            raise FramecastError(
                f"LPIPS needs AlexNet weights: {path} is missing; put {ALEXNET_FILE} (from {ALEXNET_URL}) "
                f"there or point FRAMECAST_ALEXNET at it"
            )
        # pnet_rand: build the backbone without torchvision's download; we load it ourselves.
        net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise FramecastError(f"{path}: not readable AlexNet weights ({str(e)[:120]})") from None
        own = net.net.state_dict()  # keys like slice1.0.weight, index = position in alexnet.features
        mapped = {k: state.get(f"features.{k.split('.', 1)[1]}") for k in own}
        if any(v is None or v.shape != own[k].shape for k, v in mapped.items()):
            raise FramecastError(f"{path}: not torchvision AlexNet weights (feature layers do not match)")
        net.net.load_state_dict(mapped)
        self.net = net.eval().to(device)
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        """(B, T, C, H, W) frames in [0, 1] -> (B, T) LPIPS (predictions clipped first)."""
        b, t, c = pred.shape[:3]
        x = pred.detach().float().clamp(0, 1).flatten(0, 1)  # (B*T, C, H, W)
        y = target.detach().float().flatten(0, 1)
        if c == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        d = self.net(x.to(next(self.net.parameters()).device), y.to(next(self.net.parameters()).device), normalize=True)
        return d.reshape(b, t).double().cpu()


def try_lpips(log=print) -> "LPIPS | None":
    """An LPIPS scorer, or None after one line saying what is missing (other metrics still run)."""
    try:
        return LPIPS()
    except FramecastError as e:
        log(f"framecast: LPIPS skipped: {e}")
        return None
