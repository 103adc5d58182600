"""``recon reconstruct-ct FILE``: the CT pipeline (``recon.pipelines.ct``) on one file, its metrics printed."""
from __future__ import annotations

from typing import Optional

from recon.pipelines.ct import CTSettings, reconstruct_file
from recon.pipelines.settings import SliceSpec


def command(path, out, settings: CTSettings, slices: SliceSpec = None, png=None, progress: bool = True,
            given: Optional[dict] = None) -> int:
    """``recon reconstruct-ct``: reconstruct, print the metrics of FBP and of the method (when there is a
    reference image)."""
    res = reconstruct_file(path, out, settings, slices, png=png, progress=progress, given=given)
    if res["metrics"]:
        for m, e in res["metrics"].items():
            print(f"{m:<10} PSNR {e['psnr']:.2f}  SSIM {e['ssim']:.4f}  NMSE {e['nmse']:.4f}")
    print(f"wrote {res['out']}")
    return 0
