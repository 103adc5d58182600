"""Write the bundled CT sample: a z-coherent 4-slice stack of a procedural phantom (mu / mu_water), seed 2026,
drawn apart from training (training draws a fresh random phantom every step; this one is never among them).

    python experiments/make_ct_sample.py recon/data/samples/ct-phantom-demo.h5
"""
import sys

import torch

from recon.data.results import write_h5
from recon.data import phantoms


def main(out: str) -> None:
    hu = phantoms.ct_phantom_stack(4, 128, torch.Generator().manual_seed(2026), region="mixed", spacing=0.012)
    write_h5(out, {"image": phantoms.hu_to_mu(hu).numpy()},
             {"units": "mu/mu_water (1 + HU/1000)",
              "source": "recon.data.phantoms.ct_phantom_stack(4, 128, seed 2026, spacing 0.012)"},
             compression="gzip")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "recon/data/samples/ct-phantom-demo.h5")
