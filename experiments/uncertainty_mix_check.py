"""The two-prior ensemble of ``uncertainty_symmetry.py`` against the better prior's own error (issue 18): the std
of the pooled samples of ``brain-synth-128`` and ``mni-brain-128``, the two means' disagreement, and the base std
combined with half the disagreement, each ranked against |error| of the ``brain-synth-128`` mean. Reads the cache
that ``python experiments/uncertainty_symmetry.py base,mni,mix 0,5,14 8`` writes.

    python experiments/uncertainty_mix_check.py
"""
import sys
from pathlib import Path

import torch
sys.path.insert(0, str(Path(__file__).parent))
import calibration_study as cs  # noqa: E402
from recon.uncertainty import local_rms, object_of, values  # noqa: E402
for sl in (0, 5, 14):
    a = torch.load(f"out/uncertainty_symmetry/base_s{sl}_n8.pt"); b = torch.load(f"out/uncertainty_symmetry/mni_s{sl}_n8.pt")
    tr = a["truth"]; obj = object_of(tr)
    ma, mb = a["samples"].mean(0), b["samples"].mean(0)
    err_a = (values(ma) - values(tr)).abs()
    x = torch.cat([a["samples"], b["samples"]]); m = x.mean(0)
    std_mix = (x - m).abs().square().mean(0).sqrt()
    dis = (ma - mb).abs()   # the priors' disagreement
    std_a = (a["samples"] - ma).abs().square().mean(0).sqrt()
    tot = (std_a**2 + dis**2/4).sqrt()
    print(sl, "sp(mixstd, err_base)", round(cs.spearman(std_mix[obj], err_a[obj]),3),
          "sp(disagree, err_base)", round(cs.spearman(dis[obj], err_a[obj]),3),
          "sp(std_a (+) dis/2)", round(cs.spearman(tot[obj], err_a[obj]),3),
          "pooled", round(cs.spearman(local_rms(tot,1.0)[obj], err_a[obj]),3))
