from .errors import DataError
from .fastmri import FastMRIHeader, FastMRIVolume, load_fastmri, write_fastmri
from .coils import rss, sense_combine, center_crop, zero_filled
from .simulate import coil_maps, phantom, simulate_multicoil, simulate_singlecoil, snr_to_noise_std
