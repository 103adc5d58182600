"""A prior's noise levels: the range its network was trained on and the schedules drawn from it, in the prior's
units (the network's divided by the gain of the normalisation's affine map, ``Normalization.affine``)."""
from __future__ import annotations

import torch

from . import schedules

KINDS = ("auto", "leading", "karras", "geometric")


class NoiseLevels:
    """The noise range and schedules of ``denoiser`` (a ``parametrizations.Denoiser``) seen through a gain:
    sigma in the prior's units is sigma in the network's divided by ``gain``. ``name`` names the prior in
    errors."""

    def __init__(self, denoiser, gain: float = 1.0, name: str = ""):
        self.denoiser, self.gain, self.name = denoiser, gain, name

    @property
    def sigma_min(self) -> float:
        return self.denoiser.sigma_min / self.gain

    @property
    def sigma_max(self) -> float:
        return self.denoiser.sigma_max / self.gain

    def sigmas(self, n: int, kind: str = "karras", rho: float = 7.0) -> torch.Tensor:
        """A decreasing schedule of n levels over the trained range: "karras" (EDM's rho-schedule),
        "geometric", or "auto": for a network with discrete timesteps (DDPM/ADM) ``n`` evenly spaced levels of
        its own ladder from its last timestep T - 1 to 0 (rounded, as guided-diffusion's ``space_timesteps``),
        otherwise "karras"; "leading" (discrete ladders only): the timesteps (n - 1) k, ..., k, 0 with the stride
        k = T // n (DDIM's "uniform" skip, ``range(0, T, k)``, as the DDS code steps)."""
        if n < 1:
            raise ValueError(f"a schedule needs at least 1 level, got {n}")
        ladder = self.denoiser.discrete_sigmas
        if kind == "leading":
            if ladder is None or n > len(ladder):
                raise ValueError(f"a 'leading' schedule needs a network with discrete timesteps and n <= their "
                                 f"number, got n={n} for prior {self.name!r}")
            idx = torch.arange(n - 1, -1, -1) * (len(ladder) // n)
            return ladder[idx].double() / self.gain
        if kind == "auto" and ladder is not None:
            idx = torch.linspace(len(ladder) - 1, 0, n).round().long()
            return ladder[idx].double() / self.gain
        if kind in ("karras", "auto"):
            return schedules.karras_sigmas(self.sigma_min, self.sigma_max, n, rho)
        if kind == "geometric":
            return schedules.geometric_sigmas(self.sigma_min, self.sigma_max, n)
        raise ValueError(f"unknown schedule kind {kind!r}; expected 'auto', 'leading', 'karras' or 'geometric'")
