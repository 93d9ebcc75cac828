"""The test pass's scores as torchmetrics states: every metric per horizon step, summed across
processes, and (for the test split) each clip's values, put back in the test split's order,
which the bootstrap intervals and paired tests need."""

from typing import Any

import torch
import torchmetrics
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from framecast.evaluation import metrics as M
from framecast.evaluation.verification import Verification


class ClipScores:
    """Mixin of the metrics below: with ``keep_clips``, every clip's value of every metric at
    every horizon step is kept too (list states of (B, T) blocks, gathered from all ranks),
    the per-clip scores that confidence intervals and paired tests resample
    (``framecast.evaluation.uncertainty``)."""

    def _add_clip_states(self, keep: bool) -> None:
        self.keep_clips = keep
        if keep:
            for i in range(len(self.names)):  # state names must be attributes: indices, not "mse/t2m"
                self.add_state(f"clips{i}", default=[], dist_reduce_fx="cat")

    def _keep(self, i: int, values: Tensor) -> None:
        if self.keep_clips:
            getattr(self, f"clips{i}").append(values.detach().to("cpu", torch.float64))

    def per_clip(self) -> dict[str, Tensor]:
        """name -> (N, n_future): each test clip's value at each horizon step (NaN: no valid
        pixel), in the test split's order whatever the number of processes: rank ``r`` scores
        clips ``r, r + world, ...`` (``ShardSampler``), gathered rank after rank, put back in order."""
        if not self.keep_clips:
            raise RuntimeError("per-clip scores were not kept (keep_clips=False)")
        with self.sync_context(should_unsync=True):
            out = {
                name: dim_zero_cat(getattr(self, f"clips{i}")).reshape(-1, self._n_future).cpu()
                if len(getattr(self, f"clips{i}"))
                else torch.zeros(0, self._n_future, dtype=torch.float64)
                for i, name in enumerate(self.names)
            }
        return {name: _in_test_order(v) for name, v in out.items()}


def _in_test_order(gathered: Tensor) -> Tensor:
    """Rows gathered rank after rank, put back in the test split's order: rank ``r`` scored clips
    ``r, r + world, ...`` (``ShardSampler``)."""
    dist = torch.distributed
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world == 1:
        return gathered
    n = gathered.shape[0]
    order = torch.cat([torch.arange(r, n, world) for r in range(world)])  # gathered position -> clip
    restored = torch.empty_like(gathered)
    restored[order] = gathered
    return restored


class FrameMetrics(ClipScores, torchmetrics.Metric):
    """Sums of every metric per horizon step over the clips seen; gathered from all ranks."""

    full_state_update = False

    def __init__(self, n_future: int, lpips=None, keep_clips: bool = False, fvd=None) -> None:
        super().__init__()
        self.lpips = lpips
        self._n_future = n_future
        self.names = M.METRICS + (("lpips",) if lpips is not None else ())
        for name in self.names:
            self.add_state(name, default=torch.zeros(n_future, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self._add_clip_states(keep_clips)
        # FVD (an I3DFeatures): each clip's I3D features, true and predicted futures, for the
        # Fréchet distance of the whole test split (framecast.evaluation.fvd)
        self.fvd = fvd
        if fvd is not None:
            self.add_state("fvd_real", default=[], dist_reduce_fx="cat")
            self.add_state("fvd_fake", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        """``valid``: accepted for ArrayMetrics' interface; image clips are never masked."""
        per = M.per_frame(pred, target, self.lpips)
        for i, name in enumerate(self.names):
            values = per[name]  # (B, T)
            getattr(self, name).add_(values.sum(0).to(self.count.device))
            self._keep(i, values)
        self.count.add_(pred.shape[0])
        if self.fvd is not None:  # the true futures recur model after model: embedded once (cache)
            self.fvd_real.append(self.fvd.features(target, cache=True).to(self.count.device))
            self.fvd_fake.append(self.fvd(pred).to(self.count.device))

    def fvd_features(self) -> tuple[Tensor, Tensor] | None:
        """(true, predicted) I3D features of every test clip, (N, 400) each, in the test split's
        order; None without FVD."""
        if self.fvd is None:
            return None
        with self.sync_context(should_unsync=True):
            real, fake = (dim_zero_cat(getattr(self, k)).cpu() for k in ("fvd_real", "fvd_fake"))
        return _in_test_order(real), _in_test_order(fake)

    def compute(self) -> dict[str, Tensor]:
        """name -> (n_future,) mean per horizon step."""
        return {name: getattr(self, name) / self.count.clamp_min(1) for name in self.names}


class ArrayMetrics(ClipScores, torchmetrics.Metric):
    """Physical-unit metrics of gridded arrays (``metrics.per_frame_array``) per horizon step:
    sums and counts of the defined values (a frame whose pixels are all masked counts in none)."""

    full_state_update = False

    def __init__(self, n_future: int, meta: dict[str, Any], keep_clips: bool = False) -> None:
        super().__init__()
        self._n_future = n_future
        self.channels = list(meta["channels"])
        self.image_like = bool(meta.get("image_like"))
        lat = meta.get("lat_weights")
        self.names = M.array_metric_names(self.channels, lat, self.image_like)
        self.register_buffer("scale", torch.tensor(meta["scale"], dtype=torch.float64), persistent=False)
        self.register_buffer("shift", torch.tensor(meta["shift"], dtype=torch.float64), persistent=False)
        self.lat = None if lat is None else torch.tensor(lat, dtype=torch.float64)
        for i in range(len(self.names)):  # state names must be attributes: indices, not "mse/t2m"
            self.add_state(f"s{i}", default=torch.zeros(n_future, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"n{i}", default=torch.zeros(n_future, dtype=torch.float64), dist_reduce_fx="sum")
        self._add_clip_states(keep_clips)
        # CSI, POD, FAR and FSS at data.thresholds / data.fss_scales: the test pass only (keep_clips)
        self.verification = None
        if keep_clips and meta.get("thresholds"):
            self.verification = Verification(n_future, self.channels, meta["thresholds"], meta.get("fss_scales") or [])
            self.add_state("vsums", default=self.verification.empty(), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        lat = None if self.lat is None else self.lat.to(pred.device)
        per = M.per_frame_array(pred, target, self.shift, self.scale, self.channels, valid, lat, self.image_like)
        for i, name in enumerate(self.names):
            values = per[name].to(self.s0.device)  # (B, T)
            ok = ~torch.isnan(values)
            getattr(self, f"s{i}").add_(torch.where(ok, values, 0).sum(0))
            getattr(self, f"n{i}").add_(ok.sum(0))
            self._keep(i, values)
        if self.verification is not None:
            shape = (1, 1, -1, 1, 1)
            physical = [x.double() * self.scale.view(shape) + self.shift.view(shape) for x in (pred, target)]
            if valid is not None:
                physical[1] = physical[1].masked_fill(~valid, float("nan"))
            self.verification.accumulate(self.vsums, *(x.cpu().numpy() for x in physical))

    def compute(self) -> dict[str, Tensor]:
        out = {name: getattr(self, f"s{i}") / getattr(self, f"n{i}").clamp_min(1) for i, name in enumerate(self.names)}
        if self.verification is not None:
            out.update({k: v.to(self.s0.device) for k, v in self.verification.compute(self.vsums.cpu()).items()})
        return out
