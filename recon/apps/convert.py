"""``recon convert FILE.mrd.h5 OUT.h5``: an ISMRMRD/MRD raw file in fastMRI's layout (``recon.data.mrd.convert``:
prewhitened k-space with the readout oversampling kept, the mask of prospective data, the ISMRMRD header, the
inverse whitener and the noise level; non-Cartesian data in the toolkit's non-Cartesian layout), so that every
command that reads fastMRI files reads it."""
from __future__ import annotations

from pathlib import Path

from recon.data import mrd
from recon.data.errors import DataError


def command(src, dst, prewhiten: bool = True) -> int:
    if not mrd.is_mrd(src):
        raise DataError(f"{src}: not an ISMRMRD/MRD file (an HDF5 file with /dataset/data acquisitions and "
                        f"/dataset/xml); recon convert reads MRD raw data")
    out = mrd.convert(src, dst, prewhiten=prewhiten)
    print(f"wrote {Path(out)}")
    return 0
