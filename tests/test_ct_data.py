"""CT noise models and DICOM reading."""
import math

import numpy as np
import pytest
import torch

from recon.data import ct


def test_poisson_noise_statistics():
    g = torch.Generator().manual_seed(0)
    p = torch.full((200, 200), 2.0)
    noisy = ct.poisson_noise(p, 1e4, g)
    # delta method: var(-log N / I0) = 1 / (I0 exp(-p))
    assert abs(float(noisy.mean()) - 2.0) < 0.01
    assert abs(float(noisy.var()) / (1 / (1e4 * math.exp(-2.0))) - 1) < 0.05
    assert torch.equal(ct.poisson_noise(p, 1e4, torch.Generator().manual_seed(1)),
                       ct.poisson_noise(p, 1e4, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="photons"):
        ct.poisson_noise(p, 0, g)


def test_gaussian_noise_and_window():
    g = torch.Generator().manual_seed(0)
    x = ct.gaussian_noise(torch.zeros(300, 300), 0.5, g)
    assert abs(float(x.std()) - 0.5) < 0.01
    w = ct.window(torch.tensor([-1000.0, -160.0, 40.0, 240.0, 3000.0]), 40, 400)
    assert torch.allclose(w, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def _write_dicom(path, pixels, slope, intercept, z):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.ImagePositionPatient = [0, 0, z]
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_read_dicom_slice_and_series(tmp_path):
    raw = np.arange(64, dtype=np.uint16).reshape(8, 8) * 20
    _write_dicom(tmp_path / "b.dcm", raw, 1.0, -1024.0, z=5.0)
    _write_dicom(tmp_path / "a.dcm", raw + 100, 1.0, -1024.0, z=10.0)
    one = ct.read_dicom(tmp_path / "b.dcm")
    assert torch.allclose(one, torch.tensor(raw, dtype=torch.float32) - 1024)
    series = ct.read_dicom(tmp_path)
    assert series.shape == (2, 8, 8) and torch.allclose(series[1] - series[0], torch.full((8, 8), 100.0))
    (tmp_path / "x.dcm").write_bytes(b"not dicom")
    with pytest.raises(ValueError, match="not a DICOM file"):
        ct.read_dicom(tmp_path / "x.dcm")
    with pytest.raises(FileNotFoundError):
        ct.read_dicom(tmp_path / "missing.dcm")


def test_read_dicom_padding_and_values_below_air_read_as_air(tmp_path):
    """Pixels outside the reconstruction circle (PixelPaddingValue) and any value below air become -1024 HU;
    tissue is untouched."""
    import pydicom
    raw = np.full((8, 8), 2088, dtype=np.uint16)       # 40 HU of tissue with intercept -2048
    raw[0, :] = 0                                     # padding: stored 0, -2048 HU
    raw[1, :3] = 10                                   # below air without being padding: -2038 HU
    _write_dicom(tmp_path / "p.dcm", raw, 1.0, -2048.0, z=0.0)
    ds = pydicom.dcmread(str(tmp_path / "p.dcm"))
    ds.add_new(0x00280120, "US", 0)                   # PixelPaddingValue
    ds.save_as(str(tmp_path / "p.dcm"), enforce_file_format=True)
    hu = ct.read_dicom(tmp_path / "p.dcm")
    assert torch.all(hu[0] == ct.AIR_HU) and torch.all(hu[1, :3] == ct.AIR_HU)
    assert torch.allclose(hu[2:], torch.full((6, 8), 40.0)) and torch.allclose(hu[1, 3:], torch.full((5,), 40.0))
    assert float(hu.min()) == ct.AIR_HU


def test_reconstruct_ct_from_a_dicom_series(tmp_path):
    """A DICOM series in HU is converted to mu/mu_water, projected and reconstructed; FBP of 180 views is close."""
    from recon.data import phantoms
    from recon.pipelines.ct import CTSettings, reconstruct_file

    hu = phantoms.ct_phantom(2, 32, torch.Generator().manual_seed(0))
    for i in range(2):
        _write_dicom(tmp_path / f"s{i}.dcm", (hu[i] + 1024).round().numpy(), 1.0, -1024.0, z=float(i))
    res = reconstruct_file(tmp_path, tmp_path / "out.h5", CTSettings(method="fbp", views=None), progress=False)
    assert res["metrics"]["fbp"]["psnr"] > 25
