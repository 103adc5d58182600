"""``recon simulate OUT.h5``: held-out MNI152 brain slices as a fastMRI multi-coil file (birdcage coil maps,
complex Gaussian noise at a stated SNR, the RSS of the noisy coil images as ``reconstruction_rss``). Sizes other
than the bundled 128 are resampled from it (``recon.data.brain.load_heldout``)."""
from __future__ import annotations

from operators import ifft2c
from operators.checks import check_int, check_real
from recon.apps import io
from recon.apps.settings import SliceSpec, check_seed, select_slices
from recon.data import brain, rss, simulate, write_fastmri


def command(out, slices: SliceSpec = "0:10", coils: int = 8, snr: float = 30.0, size: int = 128,
            seed: int = 0) -> int:
    check_int("coils", coils, 1, 64)
    check_real("snr (dB)", snr, minimum=-40.0, maximum=200.0)
    check_int("size", size, 8, 1024)
    check_seed(seed)
    out = io.check_output(out, option="simulate output")
    vol = brain.load_heldout(size)
    x = vol[select_slices(slices, len(vol))]
    maps = simulate.coil_maps(coils, tuple(x.shape[-2:]))
    k = simulate.simulate_multicoil(x, maps, snr_db=snr, seed=seed)
    target = rss(ifft2c(k))
    path = write_fastmri(out, k, target=target, attrs={"acquisition": "SIMULATED_MNI152", "patient_id": "mni152"})
    print(f"wrote {path}: {tuple(k.shape)} k-space, SNR {snr} dB")
    return 0
