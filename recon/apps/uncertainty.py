"""``recon uncertainty FILE``: the uncertainty pipeline (``recon.pipelines.uncertainty``) on one slice, its numbers
printed."""
from __future__ import annotations

from recon.pipelines.mri import MRISettings
from recon.pipelines.uncertainty import uncertainty_file


def command(path, out, settings: MRISettings, slice_index: int = 0, png=None, level: float = 0.9,
            calibration=None) -> int:
    """``recon uncertainty``: the maps, and the calibration numbers when the file has a reference."""
    res = uncertainty_file(path, out, settings, slice_index, png=png, level=level, calibration=calibration)
    if "coverage" in res:
        print(f"std/|error| rank correlation {res['std_error_rank_correlation']:.3f} (Pearson "
              f"{res['std_error_correlation']:.3f}), coverage of the raw {res['level']:.0%} intervals "
              f"{res['coverage']:.3f}, mean std in the object {res['mean_std_in_object']:.4g}")
    if "calibrated_coverage" in res:
        print(f"calibrated {res['calibration_level']:.0%} intervals cover {res['calibrated_coverage']:.3f} of "
              f"object pixels, mean width {res['calibrated_mean_width']:.4g}, width/|error| rank correlation "
              f"{res['width_error_rank_correlation']:.3f}")
    print(f"wrote {out}")
    return 0
