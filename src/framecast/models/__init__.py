"""Model families. Adding one is one new file here and one import line below (CONTRIBUTING.md)."""

from framecast.models import baselines, convlstm, flow, mau, maxvit, mim, phydnet, predrnn, predrnn_pp, simvp  # noqa: F401  (registers the models)
from framecast.models.base import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
