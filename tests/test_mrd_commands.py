"""ISMRMRD/MRD files through the commands: ``recon reconstruct FILE.mrd.h5`` (prewhitened by default, better than
without), ``recon info`` on an MRD file, ``recon convert`` to fastMRI's layout (and the converted file
reconstructing as the MRD file does), and ``recon export`` of results as DICOM and NIfTI."""
import h5py
import numpy as np
import pydicom
import pytest
import torch

from recon import metrics
from recon.cli import main
from recon.data import mrd_simulate as ms, simulate
from recon.data.coils import center_crop

from tests.test_mrd import C, H, S, W, _covariance, _object  # the same acquisition as the library's tests


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory):
    """Correlated coil noise with noise scans, 2x readout oversampling, every 2nd line plus a separate
    calibration block, 2 slices, 2 averages; the truth is the object on the recon field of view."""
    d = tmp_path_factory.mktemp("mrdcmd")
    path = d / "scan.mrd.h5"
    lines = np.zeros(W, bool)
    lines[::2] = True
    img = _object()
    ms.simulate_cartesian(path, img, simulate.coil_maps(C, (H, W)), _covariance(2e-3), lines=lines, calibration=12,
                          averages=2, noise_readouts=200, seed=4)
    return d, path, center_crop(img.abs(), (H // 2, W))


def _psnr(out, truth):
    with h5py.File(out) as f:
        x = torch.from_numpy(f["reconstruction"][()])
    return [metrics.psnr(truth[i], x[i]) for i in range(len(truth))]


def test_reconstruct_prewhitens_mrd_files_and_it_pays(acquisition, capsys):
    d, path, truth = acquisition
    before = path.read_bytes()
    for name, extra in (("white.h5", []), ("plain.h5", ["--no-prewhiten"])):
        assert main(["--quiet", "reconstruct", str(path), "--sampler", "cg-sense", "--out", str(d / name)]
                    + extra) == 0, capsys.readouterr().err
    white, plain = _psnr(d / "white.h5", truth), _psnr(d / "plain.h5", truth)
    assert all(w > p + 1.0 for w, p in zip(white, plain)), (white, plain)
    assert path.read_bytes() == before


def test_dds_takes_the_noise_level_of_the_prewhitened_file(acquisition):
    from recon.data import mrd
    from recon.pipelines.mri import MRISettings, sampler_for, with_stated_noise

    _, path, _ = acquisition
    vol = mrd.load_mrd(path)
    s = with_stated_noise(MRISettings(), vol)
    assert sampler_for(s).sigma_y == pytest.approx(vol.noise_std)
    assert with_stated_noise(MRISettings(noise_std="none"), vol).noise_std == "none"


def test_info_and_convert(acquisition, capsys):
    d, path, truth = acquisition
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ISMRMRD" in out and "prewhitened" in out
    conv = d / "converted.h5"
    assert main(["--quiet", "convert", str(path), str(conv)]) == 0, capsys.readouterr().err
    with h5py.File(conv) as f:
        assert f["kspace"].shape == (S, C, H, W) and "prewhitening_inverse" in f
    assert main(["--quiet", "reconstruct", str(conv), "--sampler", "cg-sense", "--out", str(d / "conv.h5")]) == 0
    assert np.allclose(_psnr(d / "conv.h5", truth), _psnr(d / "white.h5", truth), atol=0.05)
    capsys.readouterr()
    assert main(["--quiet", "convert", str(path), str(path)]) == 2
    assert "input file" in capsys.readouterr().err


def test_export_dicom_and_nifti_with_the_header_geometry(acquisition, capsys):
    import nibabel as nib

    d, path, _ = acquisition
    res = d / "white.h5"
    if not res.exists():
        assert main(["--quiet", "reconstruct", str(path), "--sampler", "cg-sense", "--out", str(res)]) == 0
    assert main(["--quiet", "export", str(res), "--format", "dicom", "--out", str(d / "dicom")]) == 0, \
        capsys.readouterr().err
    files = sorted((d / "dicom").rglob("*.dcm"))
    assert len(files) == S
    ds = pydicom.dcmread(str(files[0]))
    geo = ms.Geometry()
    # the readout runs along a DICOM row: PixelSpacing = (between rows: phase, between columns: readout)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([geo.fov[1] / W, geo.fov[0] / (H // 2)])
    assert float(ds.SliceThickness) == pytest.approx(geo.thickness)
    assert [float(v) for v in ds.ImageOrientationPatient] == pytest.approx(list(geo.read_dir) + list(geo.phase_dir))
    assert main(["--quiet", "export", str(res), "--format", "nifti", "--out", str(d / "x.nii.gz")]) == 0
    img = nib.load(str(d / "x.nii.gz"))
    assert img.shape[2] == S and np.isfinite(img.get_fdata()).all()
    assert np.allclose(np.linalg.norm(img.affine[:3, :2], axis=0), [geo.fov[0] / (H // 2), geo.fov[1] / W])
    capsys.readouterr()
    assert main(["--quiet", "export", str(res), "--format", "png", "--out", str(d / "x.png")]) == 2
    assert capsys.readouterr().err.count("recon: error:") == 1
    assert main(["--quiet", "export", str(res), "--format", "nifti", "--out", str(res)]) == 2


def test_uncertainty_of_an_mrd_file_exports_as_one_study_of_several_series(acquisition, capsys):
    d, path, _ = acquisition
    unc = d / "unc.h5"
    assert main(["--quiet", "uncertainty", str(path), "--samples", "2", "--steps", "2", "--out", str(unc)]) == 0, \
        capsys.readouterr().err
    assert main(["--quiet", "export", str(unc), "--format", "dicom", "--out", str(d / "unc_dicom")]) == 0
    studies = {pydicom.dcmread(str(f)).StudyInstanceUID for f in (d / "unc_dicom").rglob("*.dcm")}
    series = {pydicom.dcmread(str(f)).SeriesInstanceUID for f in (d / "unc_dicom").rglob("*.dcm")}
    assert len(studies) == 1 and len(series) == 2


def test_export_of_a_ct_result_is_in_hounsfield_units(tmp_path, capsys):
    from recon.data import phantoms

    ct = tmp_path / "ct.h5"
    mu = phantoms.hu_to_mu(phantoms.ct_phantom_stack(2, 32, torch.Generator().manual_seed(0)))
    with h5py.File(ct, "w") as f:
        f["image"] = mu.numpy().astype(np.float32)
    res = tmp_path / "r.h5"
    assert main(["--quiet", "reconstruct-ct", str(ct), "--sampler", "fbp", "--views", "60", "--out", str(res)]) == 0
    capsys.readouterr()
    assert main(["--quiet", "export", str(res), "--format", "dicom", "--out", str(tmp_path / "ctd")]) == 0
    assert "1 mm" in capsys.readouterr().err  # no raw geometry: said once
    with h5py.File(res) as f:
        hu = 1000.0 * (f["reconstruction"][()] - 1.0)
    files = sorted((tmp_path / "ctd").rglob("*.dcm"))
    ds = [pydicom.dcmread(str(f)) for f in files]
    assert all(x.Modality == "CT" and float(x.RescaleIntercept) == -1024 for x in ds)
    got = np.stack([x.pixel_array * float(x.RescaleSlope) + float(x.RescaleIntercept) for x in ds])
    inside = hu > -1000  # air below -1024 HU is stored as -1024
    order = np.argsort([float(x.ImagePositionPatient[2]) for x in ds])
    assert np.abs(got[order][inside] - hu[inside]).max() <= 0.51


# info reads the headers, not the readouts' samples (as for fastMRI files, no k-space): a short or NaN readout is
# found by the commands that read them
BAD_CASES = [(case, command) for case in ("truncated", "limits", "step1", "trajectory", "no_traj", "missing", "three_d",
                                          "samples", "nan")
             for command in ("reconstruct", "info", "convert") if not (command == "info" and case in ("samples", "nan"))]


@pytest.mark.parametrize("case,command", BAD_CASES)
def test_bad_mrd_files_get_one_line_through_every_command(tmp_path, capsys, case, command):
    """The bad files of test_mrd, through the commands: exit 2, one ``recon: error:`` line naming the field,
    the file byte-identical afterwards."""
    from tests import test_mrd

    path = tmp_path / "bad.mrd.h5"
    test_mrd._small(path, **{"limits": {"hdr_limits": {"kspace_encoding_step_1": (0, 7, 0)}},
                             "step1": {"flags_step": {7: 9}}, "no_traj": {"trajectory": "radial"},
                             "three_d": {"step2": 3}}.get(case, {}))
    if case == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif case == "trajectory":
        test_mrd._replace_xml(path, ">cartesian<", ">zigzag<")
    elif case == "missing":
        test_mrd._replace_xml(path, "<y>8</y>", "")
    elif case in ("samples", "nan"):
        with h5py.File(path, "r+") as f:
            rec = f["dataset/data"][5]
            if case == "samples":
                rec["data"] = rec["data"][:-2]
            else:
                rec["data"][3] = np.nan
            f["dataset/data"][5] = rec
    before = path.read_bytes()
    argv = {"reconstruct": ["reconstruct", str(path), "--sampler", "zero-filled", "--out", str(tmp_path / "r.h5")],
            "info": ["info", str(path)], "convert": ["convert", str(path), str(tmp_path / "c.h5")]}[command]
    capsys.readouterr()
    rc = main(["--quiet"] + argv)
    err = capsys.readouterr().err
    assert rc == 2, (case, command, err)
    lines = [ln for ln in err.splitlines() if ln.startswith("recon: error:")]
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    word = test_mrd.BAD[case][0] if case != "truncated" else "HDF5"
    assert word.split("'")[0].split(" = ")[0] in lines[0] or case == "truncated", (word, lines[0])
    assert path.read_bytes() == before
