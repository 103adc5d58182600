"""DICOM and NIfTI output: read back with pydicom and nibabel, the geometry of the raw header (spacing, orientation,
position of every pixel), valid and distinct UIDs, MR magnitude and CT Hounsfield units through the rescale, a
second series in the same study, atomic writes that never replace inputs and refuse NaN."""
import hashlib

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import UID

from recon.atomic import protected
from recon.data import ct, export, mrd, mrd_simulate as ms, simulate
from recon.data.image_geometry import ImageGeometry, geometry_from_header

H, W, C, S = 32, 24, 2, 3


def _rotation(angle_deg):
    a = np.deg2rad(angle_deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    """An MRD file of 3 oblique slices (rotated 20 degrees about x) 5 mm apart, readout FOV 2 x 180 mm over
    32 samples, phase 150 mm over 24 lines, 4 mm thick, centred at (10, -20, 30) mm."""
    r = _rotation(20)
    geo = ms.Geometry(fov=(180.0, 150.0), thickness=4.0, read_dir=tuple(r[:, 0]), phase_dir=tuple(r[:, 1]),
                      slice_dir=tuple(r[:, 2]), center=(10.0, -20.0, 30.0), gap=5.0)
    img = torch.zeros(S, H, W, dtype=torch.complex64)
    img[:, H // 4:3 * H // 4] = simulate.phantom((H // 2, W))
    path = tmp_path_factory.mktemp("export") / "oblique.h5"
    ms.simulate_cartesian(path, img, simulate.coil_maps(C, (H, W)), 1e-6 * np.eye(C), geometry=geo, extras=False)
    return mrd.load_mrd(path), geo


def _images(seed=0, shape=(S, H // 2, W)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 3.0


def apply_rescale(pixels, ds):
    """The Modality LUT of PS3.3 C.11.1: stored x RescaleSlope + RescaleIntercept."""
    return pixels.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _read_series(folder):
    files = sorted(folder.glob("*.dcm"))
    return [pydicom.dcmread(f) for f in files]


def test_mr_series_geometry_and_values(oblique, tmp_path):
    vol, geo = oblique
    g = vol.image_geometry()
    assert g.source == "ISMRMRD header" and g.transpose
    x = _images()
    series = export.write_dicom_series(x, tmp_path / "mr", g, study=export.Study.from_mrd(vol.mrd))
    dss = _read_series(tmp_path / "mr")
    assert len(dss) == S and [d.InstanceNumber for d in dss] == [1, 2, 3]
    h, w = x.shape[1:]
    dx, dy = geo.fov[0] / (H // 2), geo.fov[1] / W        # readout and phase pixel sizes
    for k, d in enumerate(dss):
        assert d.Modality == "MR" and d.SOPClassUID == pydicom.uid.MRImageStorage
        np.testing.assert_allclose([float(v) for v in d.ImageOrientationPatient], [*geo.read_dir, *geo.phase_dir],
                                   atol=1e-6)
        np.testing.assert_allclose([float(v) for v in d.PixelSpacing], [dy, dx], rtol=1e-6)
        assert float(d.SliceThickness) == pytest.approx(geo.thickness)
        center = np.asarray(geo.center) + k * geo.gap * np.asarray(geo.slice_dir)
        corner = center - (h // 2) * dx * np.asarray(geo.read_dir) - (w // 2) * dy * np.asarray(geo.phase_dir)
        np.testing.assert_allclose([float(v) for v in d.ImagePositionPatient], corner, atol=1e-4)
        assert (d.Rows, d.Columns) == (w, h)                      # the readout along a DICOM row
        values = apply_rescale(d.pixel_array, d)
        np.testing.assert_allclose(values, x[k].numpy().T, atol=float(d.RescaleSlope) * 0.51)
        assert float(d.WindowWidth) > 0 and d.PatientName == "Phantom^Simulated"
    uids = [d.SOPInstanceUID for d in dss] + [dss[0].SeriesInstanceUID, dss[0].StudyInstanceUID,
                                              dss[0].FrameOfReferenceUID]
    assert len(set(uids)) == len(uids) and all(UID(u).is_valid for u in uids)
    assert series.series_uid == dss[0].SeriesInstanceUID


def test_second_series_in_the_same_study(oblique, tmp_path):
    vol, _ = oblique
    g = vol.image_geometry()
    x, std = _images(), _images(1) * 0.1
    out = export.write_dicom_study(tmp_path / "study", {"reconstruction": x, "std": std}, g,
                                   study=export.Study.from_mrd(vol.mrd))
    first, second = _read_series(out[0].folder), _read_series(out[1].folder)
    assert out[0].folder.name == "01_reconstruction" and out[1].folder.name == "02_std"
    assert {d.StudyInstanceUID for d in first + second} == {first[0].StudyInstanceUID}
    assert {d.FrameOfReferenceUID for d in first + second} == {first[0].FrameOfReferenceUID}
    assert first[0].SeriesInstanceUID != second[0].SeriesInstanceUID
    assert (first[0].SeriesNumber, second[0].SeriesNumber) == (1, 2)
    assert list(second[0].ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert second[0].RescaleSlope == first[0].RescaleSlope               # shared units
    np.testing.assert_allclose(apply_rescale(second[1].pixel_array, second[1]), std[1].numpy().T,
                               atol=float(second[1].RescaleSlope) * 0.51)
    sops = [d.SOPInstanceUID for d in first + second]
    assert len(set(sops)) == len(sops)


def test_ct_hounsfield_units(tmp_path):
    hu = torch.tensor([[-1000.0, 0.0], [40.0, 1500.0]]).repeat(2, 8, 8)
    hu[0, 0, 0] = -2000.0                                               # below air: stored as air
    g = ImageGeometry.default(2, spacing=(0.7, 0.7), slice_thickness=2.5)
    export.write_dicom_series(hu, tmp_path / "ct", g, kind="ct")
    dss = _read_series(tmp_path / "ct")
    d = dss[0]
    assert d.Modality == "CT" and d.RescaleType == "HU"
    assert (float(d.RescaleIntercept), float(d.RescaleSlope)) == (-1024.0, 1.0)
    assert (float(d.WindowCenter), float(d.WindowWidth)) == (40.0, 400.0)
    expected = hu.clamp_min(-1024).numpy()
    np.testing.assert_array_equal(apply_rescale(d.pixel_array, d), expected[0])
    back = ct.read_dicom(tmp_path / "ct")                                # the toolkit's own CT reader
    np.testing.assert_array_equal(back.numpy(), expected)
    g2 = export.geometry_from_dicom(tmp_path / "ct")
    assert g2.spacing == (0.7, 0.7) and np.allclose(g2.centers, g.centers) and g2.slice_thickness == 2.5


def test_nifti_affine_matches_dicom(oblique, tmp_path):
    vol, geo = oblique
    g = vol.image_geometry()
    x = _images()
    for name in ("vol.nii", "vol.nii.gz"):
        export.write_nifti(x, tmp_path / name, g)
        img = nib.load(tmp_path / name)
        assert img.shape == (H // 2, W, S)
        np.testing.assert_allclose(img.get_fdata(), x.numpy().transpose(1, 2, 0), rtol=1e-6)
        np.testing.assert_allclose(img.header.get_zooms(), (geo.fov[0] / (H // 2), geo.fov[1] / W, geo.gap),
                                   rtol=1e-5)
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    export.write_dicom_series(x, tmp_path / "dcm", g)
    dss = _read_series(tmp_path / "dcm")
    affine = nib.load(tmp_path / "vol.nii.gz").affine
    for k, d in enumerate(dss):
        ipp = np.asarray([float(v) for v in d.ImagePositionPatient])
        row, col = np.asarray(d.ImageOrientationPatient[:3], float), np.asarray(d.ImageOrientationPatient[3:], float)
        dr, dc = (float(v) for v in d.PixelSpacing)
        for i, j in ((0, 0), (5, 3), (15, 23)):            # NIfTI voxel (i: readout, j: phase) = DICOM column i, row j
            lps = ipp + i * dc * row + j * dr * col
            ras = affine @ np.array([i, j, k, 1.0])
            np.testing.assert_allclose(ras[:3], lps * np.array([-1, -1, 1]), atol=1e-3)


def test_geometry_from_fastmri_header():
    xml = ('<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
           "<encodedSpace><matrixSize><x>640</x><y>368</y><z>1</z></matrixSize>"
           "<fieldOfView_mm><x>280</x><y>161.42</y><z>4.5</z></fieldOfView_mm></encodedSpace>"
           "<reconSpace><matrixSize><x>320</x><y>320</y><z>1</z></matrixSize>"
           "<fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm></reconSpace>"
           "<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>")
    g = geometry_from_header(xml, 4)
    assert g.spacing == pytest.approx((0.4375, 161.42 / 368)) and g.slice_thickness == 3.0
    assert g.n_slices == 4 and "axial" in g.source


def _sha(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_writes_are_atomic_and_never_replace_inputs(tmp_path):
    g = ImageGeometry.default(2)
    x = _images(shape=(2, 8, 8))
    folder = tmp_path / "series"
    export.write_dicom_series(x, folder, g)
    export.write_dicom_series(x * 2, folder, g)                  # an earlier export is replaced whole
    assert len(list(folder.glob("*.dcm"))) == 2
    before = _sha(folder)
    with protected(folder), pytest.raises(ValueError, match="input"):
        export.write_dicom_series(x, folder, g)
    with protected(folder / "IM0001.dcm"), pytest.raises(ValueError, match="input"):
        export.write_dicom_series(x, folder, g)
    assert _sha(folder) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("keep")
    with pytest.raises(ValueError, match="readme.txt"):
        export.write_dicom_series(x, other, g)
    nifti = tmp_path / "input.nii"
    export.write_nifti(x, nifti, g)
    digest = hashlib.sha256(nifti.read_bytes()).hexdigest()
    with protected(nifti), pytest.raises(ValueError, match="input"):
        export.write_nifti(x, nifti, g)
    assert hashlib.sha256(nifti.read_bytes()).hexdigest() == digest
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        export.write_dicom_series(bad, tmp_path / "nan", g)
    with pytest.raises(ValueError, match="NaN"):
        export.write_nifti(bad, tmp_path / "nan.nii", g)
    assert not (tmp_path / "nan").exists() and not (tmp_path / "nan.nii").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temporaries left


def test_bad_arguments(tmp_path):
    g = ImageGeometry.default(2)
    x = _images(shape=(2, 8, 8))
    with pytest.raises(ValueError, match="geometry describes 2 slices"):
        export.write_dicom_series(x[:1], tmp_path / "a", g)
    with pytest.raises(ValueError, match="kind"):
        export.write_dicom_series(x, tmp_path / "a", g, kind="pet")
    with pytest.raises(ValueError, match=r"\.nii"):
        export.write_nifti(x, tmp_path / "a.img", g)
    uneven = ImageGeometry(g.spacing, g.axis0, g.axis1, ((0, 0, 0), (0, 0, 1), (0, 0, 5)), 1.0)
    with pytest.raises(ValueError, match="slice positions"):
        export.write_nifti(_images(shape=(3, 8, 8)), tmp_path / "u.nii", uneven)
    with pytest.raises(ValueError, match="orthogonal"):
        ImageGeometry((1.0, 1.0), (1, 0, 0), (1, 0, 0), ((0, 0, 0),), 1.0)
