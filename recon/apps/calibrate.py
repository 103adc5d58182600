"""``recon calibrate FILE...``: the calibration pipeline (``recon.pipelines.calibration``), its numbers printed."""
from __future__ import annotations

from recon.pipelines.calibration import calibrate_files
from recon.pipelines.mri import MRISettings
from recon.uncertainty import guaranteed_miscoverage


def command(paths, out, settings: MRISettings, slices=None, level: float = 0.9, kind: str = "learned",
            progress: bool = True, method: str = "empirical", offset="auto", smooth: float = 0.0) -> int:
    cal = calibrate_files(paths, out, settings, slices, level=level, kind=kind, progress=progress, method=method,
                          offset=offset, smooth=smooth)
    print(f"{cal.slices} calibration slices: raw {level:.0%} intervals cover {cal.raw_coverage:.3f} of object pixels; "
          f"{cal.kind} heuristic, calibrated scale lambda = {cal.lam:.3g} with a floor of {cal.offset:g} x the slice intensity "
          f"(empirical miscoverage {cal.risk:.3f}; guarantee ({method}): "
          f"expected miscoverage of a new exchangeable slice <= {guaranteed_miscoverage(cal):.3g})")
    print(f"wrote {out}")
    return 0
