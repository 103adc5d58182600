"""Noise prewhitening of multi-coil MRI data from the scanner's noise acquisitions.

Receiver channels share noise (coupled coils, common preamplifier paths) and differ in noise level. With the noise
covariance Psi = E[n n^H] (C x C, per complex sample) known, the whitened data W y with W Psi W^H = I have
independent noise of equal level in every channel, so the unweighted least-squares fit of every reconstruction here
becomes the maximum-likelihood one (Pruessmann et al., MRM 1999/2001; Kellman & McVeigh, MRM 2005). It is applied
to all data, calibration lines included, before coil maps are estimated, as Gadgetron's NoiseAdjustGadget, BART
(``whiten``) and mrpro do.

**Covariance.** From the M samples of the noise acquisitions (flag ACQ_IS_NOISE_MEASUREMENT), stacked as
N (C x M): Psi_noise = N N^H / M (thermal noise has zero mean).

**Bandwidth.** Noise scans may be read out at another dwell time than the data, and the receiver filter passes
less noise than its nominal bandwidth (``relativeReceiverNoiseBandwidth`` of the header, rnbw; 1 where absent).
The covariance of data read out at dwell time t is taken as Gadgetron does:

    Psi(t) = Psi_noise * (t_noise / t) / rnbw

(noise variance per sample scales with the bandwidth 1/t; t_noise or t of 0, as some converters write, gives the
ratio 1). Gadgetron scales its whitener by sqrt(2 t / t_noise * rnbw), which is this model with the real and the
imaginary part of each whitened sample at unit variance; here the complex sample has unit variance instead.

**Scale.** The whitener keeps the data in the units they came in: W(t) = s L(t)^{-1}, L(t) L(t)^H = Psi(t) the
Cholesky factor, s^2 = C / trace(Psi(t_data)^{-1}) (the harmonic mean of the imaging data's noise variances over
the eigen-directions of Psi), which makes trace(W^H W) = C: a coil signal of random direction keeps its norm on
average, so images of whitened data keep the intensity of unwhitened ones (up to the profile below). The whitened
noise has covariance s^2 I: ``noise_std`` = s per complex sample (E|n|^2 = s^2), the level the samplers'
noise-aware data consistency takes (``DDS(sigma_y=...)``), divided by sqrt(n) where n acquisitions of a sample are
averaged.

**Coil maps.** Maps estimated from whitened data (ESPIRiT, unit norm per pixel) give an image weighted by
||W s(r)||, the whitened coil sensitivity, where the unwhitened data give ||s(r)||: the same object with another
intensity profile. ``intensity_preserving_maps`` rescales whitened maps by 1 / ||W^{-1} m(r)|| so that the
reconstruction keeps the intensity profile of the unwhitened one and only its noise changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataError


def noise_covariance(noise: np.ndarray) -> np.ndarray:
    """Psi = N N^H / M of noise samples ``noise`` (C, M) complex: (C, C) complex128, Hermitian."""
    n = np.asarray(noise).astype(np.complex128, copy=False)
    if n.ndim != 2 or n.shape[1] == 0:
        raise DataError(f"noise samples must be (channels, samples), got shape {n.shape}")
    psi = n @ n.conj().T / n.shape[1]
    return (psi + psi.conj().T) / 2


@dataclass(frozen=True)
class Prewhitener:
    """The whitening of one acquisition's channels (module docstring).

    covariance: Psi_noise (C, C) of the noise acquisitions; samples: M; noise_dwell_us: t_noise;
    data_dwell_us: t_data, the dwell time of the imaging data; bandwidth: rnbw."""

    covariance: np.ndarray
    samples: int
    noise_dwell_us: float
    data_dwell_us: float
    bandwidth: float = 1.0

    @classmethod
    def from_noise(cls, noise: np.ndarray, noise_dwell_us: float, data_dwell_us: float,
                   bandwidth: float | None = None, where: str = "the noise acquisitions") -> "Prewhitener":
        """From noise samples (C, M). Refuses fewer samples than channels and a covariance that is not positive
        definite (a dead or duplicated channel), naming ``where``."""
        c, m = np.shape(noise)
        if m < c:
            raise DataError(f"{where}: {m} noise samples for {c} channels; the noise covariance needs at least as "
                            f"many samples as channels (typically thousands)")
        pw = cls(noise_covariance(noise), int(m), float(noise_dwell_us), float(data_dwell_us),
                 1.0 if bandwidth is None else float(bandwidth))
        try:
            np.linalg.cholesky(pw.covariance)
        except np.linalg.LinAlgError:
            raise DataError(f"{where}: the noise covariance of the {c} channels is not positive definite (a channel "
                            f"without noise, or two identical channels); cannot prewhiten") from None
        return pw

    @property
    def channels(self) -> int:
        return self.covariance.shape[0]

    def covariance_at(self, dwell_us: float) -> np.ndarray:
        """Psi(t) = Psi_noise (t_noise / t) / rnbw for data read out at dwell time ``dwell_us``."""
        ratio = self.noise_dwell_us / dwell_us if self.noise_dwell_us > 0 and dwell_us > 0 else 1.0
        return self.covariance * (ratio / self.bandwidth)

    @property
    def noise_std(self) -> float:
        """s: the noise std per complex sample of whitened imaging data (module docstring)."""
        psi = self.covariance_at(self.data_dwell_us)
        return float(math.sqrt(self.channels / np.real(np.trace(np.linalg.inv(psi)))))

    def matrix(self, dwell_us: float | None = None) -> np.ndarray:
        """W(t) = s L(t)^{-1} (C, C) complex128 for data at dwell time ``dwell_us`` (default: the imaging data's)."""
        t = self.data_dwell_us if dwell_us is None else dwell_us
        lower = np.linalg.cholesky(self.covariance_at(t))
        return self.noise_std * np.linalg.inv(lower)

    def inverse(self, dwell_us: float | None = None) -> np.ndarray:
        """W(t)^{-1} = L(t) / s."""
        t = self.data_dwell_us if dwell_us is None else dwell_us
        return np.linalg.cholesky(self.covariance_at(t)) / self.noise_std

    def apply(self, data: np.ndarray, dwell_us: np.ndarray | float | None = None) -> np.ndarray:
        """Whitened ``data`` (n, C, N) (channels on axis 1), each of the n readouts at its own dwell time
        (``dwell_us``: one per readout, a scalar, or None for the imaging data's); complex64, possibly a view."""
        d = np.asarray(data)
        if d.ndim != 3 or d.shape[1] != self.channels:
            raise DataError(f"prewhitening: data of shape {d.shape} do not have the {self.channels} channels of "
                            f"the noise acquisitions on axis 1")
        t = np.broadcast_to(np.asarray(self.data_dwell_us if dwell_us is None else dwell_us, dtype=np.float64),
                            (d.shape[0],))
        values = np.unique(t)
        if len(values) == 1:   # one GEMM over all readouts; the result is a (n, C, N) view
            w = self.matrix(float(values[0])).astype(np.complex64)
            return np.tensordot(w, d.astype(np.complex64, copy=False), axes=([1], [1])).transpose(1, 0, 2)
        out = np.empty(d.shape, dtype=np.complex64)
        for value in values:
            rows = np.flatnonzero(t == value)
            w = self.matrix(float(value)).astype(np.complex64)
            out[rows] = np.tensordot(w, d[rows].astype(np.complex64, copy=False), axes=([1], [1])).transpose(1, 0, 2)
        return out

    def describe(self) -> str:
        corr = np.abs(self.covariance) / np.sqrt(np.outer(np.diag(self.covariance).real,
                                                          np.diag(self.covariance).real))
        off = corr[~np.eye(self.channels, dtype=bool)]
        levels = np.sqrt(np.diag(self.covariance).real)
        return (f"{self.samples} noise samples of {self.channels} channels; channel noise std "
                f"{levels.min():.3g}..{levels.max():.3g}, correlation up to {off.max() if off.size else 0:.2f}; "
                f"dwell {self.noise_dwell_us:g} us (noise) / {self.data_dwell_us:g} us (data), receiver noise "
                f"bandwidth {self.bandwidth:g}")


def intensity_preserving_maps(maps: torch.Tensor, inverse_whitener) -> torch.Tensor:
    """Maps estimated from whitened data (C, H, W), rescaled pixel by pixel by 1 / ||W^{-1} m(r)||.

    For whitened data y_w = W y of y_c = F(s_c rho) the maps m = W s_u (s_u = s / ||s||, W^{-1} m of unit norm)
    make the SENSE solution ||s(r)|| rho(r): the intensity of the unwhitened reconstruction, with the whitened
    noise. ``inverse_whitener`` is W^{-1} (C, C) (``Prewhitener.inverse``). Pixels where the maps vanish stay 0."""
    winv = torch.as_tensor(np.asarray(inverse_whitener), dtype=maps.dtype, device=maps.device)
    if winv.shape != (maps.shape[-3], maps.shape[-3]):
        raise ValueError(f"the inverse whitener has shape {tuple(winv.shape)}; expected ({maps.shape[-3]}, "
                         f"{maps.shape[-3]}) for maps of {maps.shape[-3]} coils")
    unwhitened = torch.einsum("ij,...jhw->...ihw", winv, maps)
    norm = unwhitened.abs().square().sum(-3, keepdim=True).sqrt()
    return torch.where(norm > 0, maps / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(maps))
