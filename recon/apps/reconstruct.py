"""``recon reconstruct FILE``: the MRI pipeline (``recon.pipelines.mri``) on one file, its metrics printed."""
from __future__ import annotations

from recon.data import results as io
from recon.pipelines.mri import MRISettings, reconstruct_file
from recon.pipelines.settings import SliceSpec


def command(path, out, settings: MRISettings, slices: SliceSpec = None, png=None, progress: bool = True) -> int:
    """``recon reconstruct``: reconstruct, print the metrics of each slice and their mean."""
    settings.check()
    io.check_output(out, source=path)
    io.check_figure_path(png, sources=[path], others=[out])
    res = reconstruct_file(path, out, settings, slices, png=png, progress=progress)
    for r in res["metrics"]:
        print(f"slice {r['slice']:>3}: PSNR {r['psnr']:.2f}  SSIM {r['ssim']:.4f}  NMSE {r['nmse']:.4f}")
    if res["summary"]:
        s = res["summary"]
        print(f"mean:      PSNR {s['psnr']:.2f}  SSIM {s['ssim']:.4f}  NMSE {s['nmse']:.4f}")
    print(f"wrote {res['out']}")
    return 0
