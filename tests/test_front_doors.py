"""One registry for every front door: the same settings in Python (the public API: operators, masks, ESPIRiT,
``samplers.DDS``) and on the command line give bitwise the same result, for MRI and for CT."""
import h5py
import numpy as np
import torch

from operators import MultiCoilMRI, espirit, masks
from operators.ct import ParallelBeamCT, angles
from recon import priors, samplers
from recon.cli import main
from recon.data import load_fastmri, phantoms


def test_mri_python_and_command_line_agree_bitwise(tmp_path):
    sim = tmp_path / "sim.h5"
    assert main(["--quiet", "simulate", str(sim), "--slices", "0:2", "--size", "32", "--coils", "2"]) == 0
    out = tmp_path / "r.h5"
    assert main(["--quiet", "reconstruct", str(sim), "--sampler", "dds", "--steps", "3", "--slices", "1",
                 "--center-fraction", "0.25", "--seed", "7", "--out", str(out)]) == 0
    with h5py.File(out) as f:
        cli = torch.from_numpy(f["reconstruction"][()])

    vol = load_fastmri(sim)
    k = vol.kspace(1)
    seed = 7 + 1                                  # the command seeds slice i with seed + i
    mask = masks.RandomMask([0.25], [4])(tuple(k.shape), seed=seed)
    y = mask * k
    A = MultiCoilMRI(espirit.maps_for_mask(y, mask), mask)
    x = samplers.DDS(steps=3)(y, A, priors.load("bundled:brain-synth-128"),
                              generator=torch.Generator().manual_seed(seed))
    assert torch.equal(cli[0], x.mean(0).abs())


def test_ct_python_and_command_line_agree_bitwise(tmp_path):
    img = phantoms.hu_to_mu(phantoms.ct_phantom_stack(1, 32, torch.Generator().manual_seed(0))).float()
    ct = tmp_path / "ct.h5"
    with h5py.File(ct, "w") as f:
        f["image"] = img.numpy().astype(np.float32)
    out = tmp_path / "r.h5"
    assert main(["--quiet", "reconstruct-ct", str(ct), "--sampler", "dds", "--views", "12", "--steps", "3",
                 "--seed", "3", "--out", str(out)]) == 0
    with h5py.File(out) as f:
        cli = torch.from_numpy(f["reconstruction"][()])

    A = ParallelBeamCT(32, angles(views=12))
    x = samplers.DDS(steps=3)(A(img), A, priors.load("bundled:ct-anatomy-v2-128"),
                              generator=torch.Generator().manual_seed(3))
    assert torch.equal(cli, x.mean(0))
