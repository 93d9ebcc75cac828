"""framecast: video frame prediction (spatiotemporal predictive learning) on PyTorch Lightning.

Public API::

    import framecast
    framecast.list_models()
    model = framecast.create_model("predrnn", num_hidden=(64, 64))
    future = framecast.forecast(model, context, n_future=10)   # (B, T, C, H, W) -> (B, 10, C, H, W)
    model = framecast.load_checkpoint("runs/x/checkpoints/best.ckpt")
    f = framecast.Forecaster(model); f.predict(frames); f.push(frame)   # arrays, streaming
"""

from framecast import models  # noqa: F401  (fills the registry)
from framecast.api import forecast
from framecast.checkpoint import load_checkpoint
from framecast.forecasting import Forecaster
from framecast.registry import create_model, list_models


def _version() -> str:
    """The installed distribution's version; a checkout imported without installing has none."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("framecast")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
__all__ = ["Forecaster", "__version__", "create_model", "forecast", "list_models", "load_checkpoint"]
