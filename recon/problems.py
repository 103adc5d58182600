"""Ready-made reconstruction problems on the bundled held-out brain slices (for the demo, tests and studies).

``multicoil_problem`` simulates a multi-coil acquisition of a held-out slice of the MNI152 template
(complex, smooth synthetic phase): birdcage coil maps, complex Gaussian noise at a stated SNR, a
retrospective undersampling mask, and ESPIRiT maps estimated from the undersampled calibration region
(cropped at eigenvalue 0.95, which also gives the support of the object). The default centre fraction, 0.12
(15 of 128 lines), gives ESPIRiT a calibration region comparable to fastMRI's 0.08 of 320-368 lines.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from operators import MultiCoilMRI, espirit, masks
from recon.data import brain, simulate


@dataclass
class Problem:
    x_true: torch.Tensor      # (H, W) complex ground truth (or (S, H, W))
    kspace: torch.Tensor      # (C, H, W) fully sampled noisy k-space
    mask: torch.Tensor        # broadcastable to k-space
    maps: torch.Tensor        # (C, H, W) ESPIRiT maps from the undersampled data
    maps_true: torch.Tensor   # (C, H, W) the simulated sensitivities

    @property
    def y(self) -> torch.Tensor:
        return self.mask * self.kspace

    @property
    def A(self) -> MultiCoilMRI:
        return MultiCoilMRI(self.maps, self.mask)

    @property
    def acceleration(self) -> float:
        return masks.acceleration(self.mask, tuple(self.kspace.shape))


def multicoil_problem(slice_index=5, n_coils: int = 8, mask: str = "random", acceleration: float = 4,
                      center_fraction: float = 0.12, snr_db: float = 30.0, seed: int = 0, size: int = 128,
                      **mask_params) -> Problem:
    """Simulate an undersampled multi-coil acquisition of held-out slice(s) ``slice_index`` (int or slice)."""
    x = brain.load_heldout(size)
    if isinstance(slice_index, int) and not -len(x) <= slice_index < len(x):
        raise IndexError(f"held-out slice {slice_index} out of range: there are {len(x)} (0..{len(x) - 1})")
    x = x[slice_index]
    maps_true = simulate.coil_maps(n_coils, (size, size))
    k = simulate.simulate_multicoil(x, maps_true, snr_db=snr_db, seed=seed)
    if mask in ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction", "gaussian1d"):
        mask_params.setdefault("center_fraction", center_fraction)
    m = masks.get(mask, acceleration=acceleration, **mask_params)(tuple(k.shape), seed=seed)
    maps = espirit.maps_for_mask(m * k, m)
    return Problem(x, k, m, maps, maps_true)
