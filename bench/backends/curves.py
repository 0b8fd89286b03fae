"""The curve recorder's layout, the same on every backend: which updates' minibatch loss and gradient norm a run
keeps (every `stride`-th loss, every `norm_stride`-th norm, a multiple of `stride`), in fixed-size buffers that the
train step writes on the device and the host reads once after training."""

from __future__ import annotations

import math


class Layout:
    """At most `max_points` losses and `norm_points` norms (default: as many as losses) of `total_updates`.

    The loss is free to keep; the norm is a reduction over all 648,010 gradient entries, computed only on the
    steps it is kept at. Inside an XLA-compiled CPU loop it costs about as much as a whole update at batch 10
    (0.5 ms), hence `norm_points` for --dispatch fast."""

    def __init__(self, total_updates: int, max_points: int, norm_points: int | None = None):
        self.stride = max(1, math.ceil(total_updates / max_points))
        self.size = max(1, math.ceil(total_updates / self.stride))
        per_norm = max(1, math.ceil(total_updates / (norm_points or max_points)))
        self.norm_stride = self.stride * max(1, math.ceil(per_norm / self.stride))
        self.norm_size = max(1, math.ceil(total_updates / self.norm_stride))

    @staticmethod
    def curve(values, stride: int) -> list:
        """[[update, value], ...] (update counted from 1) of a buffer: slots never reached (a run stopped early)
        stay NaN and are left out; a NaN loss that training produced is kept (the record writes it as null)."""
        reached = len(values)
        while reached and math.isnan(values[reached - 1]):
            reached -= 1
        return [[i * stride + 1, v] for i, v in enumerate(values[:reached])]

    def read(self, loss_values, norm_values) -> tuple[list, list]:
        """`loss_curve`, `grad_norm_curve` from the two buffers' values."""
        return self.curve(list(loss_values), self.stride), self.curve(list(norm_values), self.norm_stride)
