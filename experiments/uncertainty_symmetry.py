"""Does an ensemble over exact symmetries of the prior make DDS's sample std rank |error| better (issue 18)?

A prior is wrapped so that sample k is denoised under a symmetry g_k, D_k(x) = g_k^-1 D(g_k x): a left-right flip
for half of the samples (``flip``), a random global phase per sample (``phase``), or both. Where the network is
not equivariant, the samples then also spread over its disagreements with itself (a cheap epistemic ensemble).
``mni`` draws the same samples with ``mni-brain-128``, and ``mix`` pools them with ``base``'s: a two-prior
ensemble (run ``base`` and ``mni`` first).
Real slices of ``calibration_study.py --set real`` (index 0..14), fastMRI random 4x, 8 coils, 30 dB; DDS with
the uncertainty default (no in-plane TV). Per slice: PSNR of the mean in the object, raw 90% coverage, Spearman of
the std (complex, of |x|, pooled over 1 px) with |error of the mean|, the 2-px local-rms ceiling, the mean std
over the mean |error|.

    OMP_NUM_THREADS=2 python experiments/uncertainty_symmetry.py base,flip,phase,flipphase,mni,mix 0,5,14 8
"""
import math
import sys
import time
from pathlib import Path

import torch
sys.path.insert(0, str(Path(__file__).parent))
import calibration_study as cs
from recon import priors, samplers
from recon.uncertainty import values, object_of, local_rms


class Sym(torch.nn.Module):
    def __init__(self, inner, flips, phases):
        super().__init__()
        self.inner, self.net = inner, inner.net
        self.sigma_min, self.sigma_max = inner.sigma_min, inner.sigma_max
        self.discrete_sigmas = getattr(inner, "discrete_sigmas", None)
        self.flips, self.phases = flips, phases

    def forward(self, u, sig):
        n = u.shape[0]
        f = self.flips[:n].view(-1, 1, 1, 1)
        c, s = torch.cos(self.phases[:n]).view(-1, 1), torch.sin(self.phases[:n]).view(-1, 1)
        def rot(v, sgn):
            re, im = v[:, 0], v[:, 1]
            cc, ss = c[..., None], sgn * s[..., None]
            return torch.stack([cc * re - ss * im, ss * re + cc * im], 1)
        v = rot(u, 1.0)
        v = torch.where(f, v.flip(-1), v)
        d = self.inner(v, sig)
        d = torch.where(f, d.flip(-1), d)
        return rot(d, -1.0)


def sym_prior(base, n, mode, seed):
    g = torch.Generator().manual_seed(seed)
    flips = torch.zeros(n, dtype=torch.bool)
    phases = torch.zeros(n)
    if "flip" in mode:
        flips[n // 2:] = True
    if "phase" in mode:
        phases = torch.rand(n, generator=g) * 2 * math.pi
    p = priors.load("bundled:brain-synth-128")
    p.denoiser = Sym(base.denoiser, flips, phases)
    return p


def spearman(a, b):
    return cs.spearman(a, b)


def main():
    modes = sys.argv[1].split(",")
    slices = [int(s) for s in sys.argv[2].split(",")]
    n = int(sys.argv[3])
    cache = Path("out/uncertainty_symmetry"); cache.mkdir(parents=True, exist_ok=True)
    base = priors.load("bundled:brain-synth-128")
    mni = priors.load("bundled:mni-brain-128")
    for sl in slices:
        truth, y, A, r = cs.real_problem(sl, 4.0, 0)
        for mode in modes:
            if mode == "mix":   # the two bundled brain priors' samples together: a two-member prior ensemble
                a, b = (torch.load(cache / f"{m}_s{sl}_n{n}.pt") for m in ("base", "mni"))
                u = {"samples": torch.cat([a["samples"], b["samples"]]), "truth": a["truth"], "s": a["s"] + b["s"]}
            else:
                path = cache / f"{mode}_s{sl}_n{n}.pt"
                if not path.exists():
                    pr = base if mode == "base" else mni if mode == "mni" else sym_prior(base, n, mode, sl)
                    t = time.time()
                    x = samplers.DDS(tv_xy=0.0)(y, A, pr, n_samples=n, generator=torch.Generator().manual_seed(sl))
                    torch.save({"samples": x, "truth": truth, "s": time.time() - t}, path)
                u = torch.load(path)
            x, tr = u["samples"], u["truth"]
            obj = object_of(tr)
            m = x.mean(0)
            err = (values(m) - values(tr)).abs()
            std_c = (x - m).abs().square().mean(0).sqrt()
            std_m = values(x).std(0)
            lo, hi = torch.quantile(values(x), 0.05, 0), torch.quantile(values(x), 0.95, 0)
            cov = float(((values(tr) >= lo) & (values(tr) <= hi))[obj].double().mean())
            psnr = float(10 * torch.log10(values(tr).max() ** 2 / (err[obj] ** 2).mean()))
            ceil = spearman(local_rms(err, 2.0)[obj], err[obj])
            print(f"{mode:12s} slice {sl:2d}: psnr {psnr:6.2f} cov {cov:.3f} sp_c {spearman(std_c[obj], err[obj]):.3f} "
                  f"sp_m {spearman(std_m[obj], err[obj]):.3f} sp_pool {spearman(local_rms(std_c,1.0)[obj], err[obj]):.3f} "
                  f"ceil2 {ceil:.3f} std/err {float(std_c[obj].mean()/err[obj].mean()):.3f} {u['s']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
