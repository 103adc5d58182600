"""Low-dose CT: DDS with the noiseless CG against DDS told the pipeline's stated noise (without and with the in-plane
TV of the default, ``dds_tv``), and TV.

Slice 0 of the bundled phantom stack (``recon/data/samples/ct-phantom-demo.h5``), parallel beam, 30 views and
0-120 degrees, Poisson counts of 1e5 and 1e4 incident photons per bin (``recon.pipelines.ct.simulate``);
prior ``ct-phantom-128`` or the one named first on the command line; ``reconstruct_ct.noise_std`` gives DDS its sigma_y. PSNR / SSIM in mu units.

    OMP_NUM_THREADS=2 python experiments/ct_noise_check.py [bundled:ct-anatomy-v2-128]
"""
import sys
import h5py
import torch

from recon.pipelines import ct as rc
from recon import priors, samplers
torch.set_num_threads(int(__import__('os').environ.get('OMP_NUM_THREADS', 2)))
with h5py.File("recon/data/samples/ct-phantom-demo.h5") as f:
    img = torch.from_numpy(f["image"][0]).float()[None]
p = priors.load(sys.argv[1] if len(sys.argv) > 1 else "bundled:ct-phantom-128")
for photons in (1e5, 1e4):
    for lim in (None, (0.0, 120.0)):
        st = rc.CTSettings(views=None if lim else 30, limited=lim, noise="poisson", noise_level=photons)
        op = rc.operator(st, (128, 128))
        y = rc.simulate(img, op, st, torch.Generator().manual_seed(0))
        sy = rc.noise_std(y, st)
        row = {}
        plain = rc.CTSettings(views=None if lim else 30, limited=lim, noise="poisson", noise_level=photons, dds_tv=0.0)
        for lab, s in [("noiseless", samplers.DDS(steps=50, tv_xy=0)), ("noise", rc.sampler_for(plain, sy)),
                       ("noise+tv, 50 steps", rc.sampler_for(st, sy)),
                       (f"noise+tv (default, {samplers.DDS.steps_for(op)} steps)", rc.sampler_for(st, sy, op))]:
            x = s(y, op, p, generator=torch.Generator().manual_seed(0))[0]
            e = rc.score(img, x); row[lab] = (round(e["psnr"], 2), round(e["ssim"], 4))
        st_tv = rc.CTSettings(method="tv", views=None if lim else 30, limited=lim, noise="poisson", noise_level=photons)
        e = rc.score(img, rc.reconstruct(y, op, st_tv)[0]); row["tv"] = (round(e["psnr"], 2), round(e["ssim"], 4))
        print(photons, "0-120" if lim else "30 views", f"sigma_y {sy:.4f}", row, flush=True)
