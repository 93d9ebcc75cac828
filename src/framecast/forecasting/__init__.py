"""Forecasting a user's own data from a trained model: the ``Forecaster`` (arrays in memory,
streaming), ``forecast_video`` (a video file in, a GIF or MP4 out) and ``forecast_array``
(gridded arrays in physical units)."""

from framecast.forecasting.arrays import forecast_array
from framecast.forecasting.forecaster import Forecaster
from framecast.forecasting.video import forecast_video, write_forecast

__all__ = ["Forecaster", "forecast_array", "forecast_video", "write_forecast"]
