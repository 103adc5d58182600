"""``recon simulate OUT.h5``: held-out MNI152 brain slices as a fastMRI multi-coil file (birdcage coil maps,
complex Gaussian noise at a stated SNR, the RSS of the noisy coil images as ``reconstruction_rss``)."""
from __future__ import annotations

from operators import ifft2c
from recon.apps.settings import SliceSpec, select_slices
from recon.data import brain, rss, simulate, write_fastmri


def command(out, slices: SliceSpec = "0:10", coils: int = 8, snr: float = 30.0, size: int = 128,
            seed: int = 0) -> int:
    vol = brain.load_heldout(size)
    x = vol[select_slices(slices, len(vol))]
    maps = simulate.coil_maps(coils, tuple(x.shape[-2:]))
    k = simulate.simulate_multicoil(x, maps, snr_db=snr, seed=seed)
    target = rss(ifft2c(k))
    path = write_fastmri(out, k, target=target, attrs={"acquisition": "SIMULATED_MNI152", "patient_id": "mni152"})
    print(f"wrote {path}: {tuple(k.shape)} k-space, SNR {snr} dB")
    return 0
