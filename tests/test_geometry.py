"""Native fastMRI geometry: files written with plain h5py at raw geometry (readout oversampled, dead lines, a
320-style recon matrix in the header), the three protocols, prospective data, priors on other grids, and the
leaderboard's metrics."""
import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from operators import masks
from operators.fft import fft2c, ifft2c
from recon.cli import main
from recon.data import brain, center_crop, geometry, simulate

ENC, REC, OBJ = (128, 76), (64, 64), (60, 70)  # a quarter of knee's 640 x 372 / 320 x 320, object wider than 64


def _images(n, size):
    x = brain.load_heldout(128)[:n]
    parts = [F.interpolate(p[:, None], size=size, mode="bilinear", align_corners=False)[:, 0] for p in (x.real, x.imag)]
    return torch.complex(*parts)


def write_raw(path, n=1, coils=4, enc=ENC, rec=REC, obj=OBJ, dead=(2, 2), mask=None, sizes=True, seed=0):
    """A fastMRI-style file written with h5py alone (not the toolkit's writer), as the converter lays it out."""
    return simulate.write_raw_fastmri(path, _images(n, obj), coils, enc, rec, dead, mask, sizes, seed=seed)


# --- the transforms ------------------------------------------------------------------------------------------
def test_readout_oversampling_removal_is_exact_and_commutes_with_a_line_mask():
    k, _, _ = simulate.raw_fastmri_slices(_images(1, OBJ), 3, ENC, REC, (0, 0), seed=1)
    k = k[0]
    cropped = geometry.crop_readout(k, REC[0])
    rows = ifft2c(k)[..., ENC[0] // 2 - REC[0] // 2:ENC[0] // 2 + REC[0] // 2, :]
    assert torch.allclose(ifft2c(cropped), rows, atol=1e-5 * float(rows.abs().max()))
    m = masks.RandomMask([0.08], [4])((1, ENC[1]), seed=0)
    assert torch.allclose(geometry.crop_readout(m * k, REC[0]), m * cropped, atol=1e-6 * float(cropped.abs().max()))


def test_dead_lines_follow_the_data_and_the_header_limits():
    k, _, lim = simulate.raw_fastmri_slices(_images(1, OBJ), 2, ENC, REC, (2, 2), seed=0)
    alive = geometry.alive_lines(k[0])
    assert alive[0, :2].sum() == 0 and alive[0, -2:].sum() == 0 and alive[0, 2:-2].all()
    assert lim == (ENC[1] // 2 - 2, ENC[1] - 4 - 1)
    narrower = geometry.alive_lines(k[0], (lim[0] - 1, lim[1] - 3), ENC[1])  # one more line left, two right
    assert narrower.sum() == alive.sum() - 3 and narrower[0, 2] == 0 and narrower[0, -4:].sum() == 0


def test_full_fov_keeps_the_encoded_phase_encode_field_and_crops_at_the_end():
    k, _, lim = simulate.raw_fastmri_slices(_images(1, OBJ), 2, ENC, REC, (2, 2), seed=0)
    g = geometry.prepare(k[0], "full-fov", REC, limits=lim, encoded_width=ENC[1])
    assert g.kspace.shape == (2, REC[0], ENC[1]) and g.crop == REC and g.mask is None and g.reference is None
    assert g.alive[0, :2].sum() == 0


def test_image_crop_refuses_prospective_data_and_kspace_crop_keeps_only_acquired_samples():
    k, _, lim = simulate.raw_fastmri_slices(_images(1, OBJ), 2, ENC, REC, (2, 2), seed=0)
    m = masks.RandomMask([0.08], [4])((1, ENC[1]), seed=0)
    acquired = k[0] * m
    with pytest.raises(ValueError, match="cannot use prospective data"):
        geometry.prepare(acquired, "image-crop", REC, file_mask=m)
    g = geometry.prepare(acquired, "kspace-crop", REC, size=(64, 64), file_mask=m, limits=lim, encoded_width=ENC[1])
    assert g.kspace.shape == (2, 64, 64) and g.mask.shape == (1, 64)
    # every column the grid calls measured is an acquired, non-dead column of the file, readout-cropped
    full = geometry.crop_readout(acquired, 64)
    keep = torch.ones(ENC[1], dtype=torch.bool)
    keep[:2] = keep[-2:] = False                       # the header's dead lines (an even number each side) go
    cols = torch.nonzero(keep).flatten()
    cols = cols[len(cols) // 2 - 32:len(cols) // 2 + 32]  # the centred phase-encode crop
    assert torch.equal(g.mask[0], (m[0, cols] > 0).float())
    assert torch.allclose(g.kspace, full[..., cols] * g.mask, atol=1e-6 * float(full.abs().max()))


def test_kspace_crop_reference_is_the_rss_of_the_same_cropped_data():
    k, _, lim = simulate.raw_fastmri_slices(_images(1, OBJ), 2, ENC, REC, (2, 2), seed=0)
    g = geometry.prepare(k[0], "kspace-crop", REC, size=(64, 64), limits=lim, encoded_width=ENC[1])
    assert torch.allclose(g.reference, ifft2c(g.kspace).abs().square().sum(0).sqrt(), atol=1e-6)


def test_bad_geometry_is_refused_with_one_line():
    k = torch.randn(2, 32, 30, dtype=torch.complex64)
    with pytest.raises(ValueError, match="larger than the encoded"):
        geometry.prepare(k, "full-fov", (40, 30))
    with pytest.raises(ValueError, match="unknown protocol"):
        geometry.prepare(k, "crop", (16, 16))


# --- priors on other grids ------------------------------------------------------------------------------------
class _FixedNet(torch.nn.Module):
    any_size = False
    config = {}

    def forward(self, x, c):
        return torch.zeros_like(x)


def test_a_network_that_runs_only_at_its_size_is_refused_by_name():
    from recon.priors import EDM, DiffusionPrior
    prior = DiffusionPrior(EDM(_FixedNet()), image_size=(64, 64), name="fixed-64")
    prior.check_grid((64, 64))
    with pytest.raises(ValueError, match="fixed-64.*runs only on its training grid"):
        prior.check_grid((64, 76))


def test_padding_to_the_network_multiple_is_reflection_and_cropped_back():
    from recon import priors
    prior = priors.load("bundled:mni-brain-128")
    x = torch.randn(2, 60, 76, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    seen = []
    den = prior.denoiser.forward
    prior.denoiser.forward = lambda u, s: seen.append(tuple(u.shape)) or den(u, s)
    d = prior.denoise(x, 0.5)
    assert seen == [(2, 2, 64, 80)] and d.shape == x.shape and torch.isfinite(torch.view_as_real(d)).all()


# --- end to end through `recon reconstruct` --------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    write_raw(d / "knee.h5", n=2)
    write_raw(d / "brain.h5", n=1, coils=4, enc=(128, 64), rec=(64, 64), obj=(60, 60), dead=(0, 0), seed=1)
    m = masks.RandomMask([0.08], [4])((1, ENC[1]), seed=3).reshape(1, -1)
    write_raw(d / "test.h5", n=1, mask=m)
    write_raw(d / "nosize.h5", n=1, mask=m, sizes=False)
    return d


def _psnr(path):
    with h5py.File(path) as h:
        return h.attrs["psnr"], h["reconstruction"][()]


@pytest.mark.parametrize("name", ["knee", "brain"])
def test_defaults_give_the_recon_matrix_and_dds_beats_cg_sense(raw, name, tmp_path):
    f = raw / f"{name}.h5"
    for method, steps in (("cg-sense", []), ("dds", ["--steps", "20"])):
        assert main(["--quiet", "reconstruct", str(f), "--sampler", method, "--center-fraction", "0.16",
                     "--out", str(tmp_path / f"{method}.h5")] + steps) == 0
    (p_cg, r_cg), (p_dds, r_dds) = _psnr(tmp_path / "cg-sense.h5"), _psnr(tmp_path / "dds.h5")
    assert r_dds.shape[-2:] == REC and np.isfinite(r_dds).all()
    assert p_dds > p_cg + 1.0


def test_stored_metrics_equal_fastmri_evaluate_on_the_same_arrays(raw, tmp_path):
    import fastmri.evaluate as reference
    out = tmp_path / "r.h5"
    assert main(["--quiet", "reconstruct", str(raw / "knee.h5"), "--sampler", "cg-sense", "--out", str(out)]) == 0
    with h5py.File(raw / "knee.h5") as src, h5py.File(out) as h:
        target, maxval = src["reconstruction_rss"][()], float(src.attrs["max"])
        rec = h["reconstruction"][()]
        import json
        rows = json.loads(h.attrs["metrics"])
    for i, row in enumerate(rows):
        assert row["psnr"] == pytest.approx(float(reference.psnr(target[i], rec[i], maxval)), abs=1e-4)
        ssim = np.asarray(reference.ssim(target[i][None], rec[i][None], maxval)).item()
        assert row["ssim"] == pytest.approx(ssim, abs=1e-4)


def test_prospective_file_uses_its_own_samples(raw, tmp_path):
    out = tmp_path / "p.h5"
    assert main(["--quiet", "reconstruct", str(raw / "test.h5"), "--sampler", "cg-sense", "--out", str(out)]) == 0
    with h5py.File(raw / "test.h5") as src, h5py.File(out) as h:
        file_mask = src["mask"][()]
        assert h["reconstruction"].shape == (1,) + REC
        used = h["mask"][0, 0]
    alive = np.ones(ENC[1])
    alive[:2] = alive[-2:] = 0
    assert np.array_equal(used, file_mask * alive)


def test_protocol_errors_are_one_line(raw, tmp_path, capsys):
    assert main(["reconstruct", str(raw / "test.h5"), "--protocol", "image-crop", "--sampler", "cg-sense",
                 "--out", str(tmp_path / "x.h5")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recon: error:")]
    assert len(err) == 1 and "cannot use prospective data" in err[0]
    assert main(["reconstruct", str(raw / "nosize.h5"), "--sampler", "cg-sense", "--out", str(tmp_path / "y.h5")]) == 2
    assert "names no encodedSpace/reconSpace matrixSize" in capsys.readouterr().err
    assert main(["reconstruct", str(raw / "knee.h5"), "--protocol", "nope", "--out", str(tmp_path / "z.h5")]) == 2
    assert "unknown protocol" in capsys.readouterr().err


@pytest.mark.parametrize("protocol", ["image-crop", "kspace-crop"])
def test_crop_protocols_reconstruct_on_the_prior_grid(raw, tmp_path, protocol):
    out = tmp_path / f"{protocol}.h5"
    assert main(["--quiet", "reconstruct", str(raw / "knee.h5"), "--slices", "0", "--sampler", "cg-sense",
                 "--protocol", protocol, "--center-fraction", "0.16", "--out", str(out)]) == 0
    with h5py.File(out) as h:
        assert h["reconstruction"].shape == (1,) + REC and h.attrs["protocol_used"] == protocol
        assert h.attrs["psnr"] > 20


def test_normalization_option_overrides_the_prior_convention(raw, tmp_path, capsys):
    from recon.pipelines.settings import parse_normalization
    assert parse_normalization("percentile:95") == {"kind": "percentile", "q": 95.0}
    assert parse_normalization("max") == {"kind": "max"} and parse_normalization(None) is None
    for bad in ("fixed", "max:3", "percentile:101", "range:-1", "bogus", "fixed:abc"):
        with pytest.raises(ValueError, match="normalization"):
            parse_normalization(bad)
    outs = {}
    for norm in (None, "max"):
        out = tmp_path / f"{norm}.h5"
        assert main(["--quiet", "reconstruct", str(raw / "brain.h5"), "--steps", "4", "--out", str(out)]
                    + (["--normalization", norm] if norm else [])) == 0
        with h5py.File(out) as h:
            outs[norm] = h["reconstruction"][()]
    assert not np.allclose(outs[None], outs["max"])
    assert main(["reconstruct", str(raw / "brain.h5"), "--normalization", "fixed", "--out", str(tmp_path / "x.h5")]) == 2
    assert "needs a value" in capsys.readouterr().err


def test_single_coil_raw_file(tmp_path):
    k, t, lim = simulate.raw_fastmri_slices(_images(1, OBJ), 1, ENC, REC, (2, 2), snr_db=30.0, seed=2)
    path = tmp_path / "sc.h5"
    with h5py.File(path, "w") as f:  # single-coil layout: (slices, H, W) and reconstruction_esc
        f.create_dataset("kspace", data=k[:, 0].numpy())
        f.create_dataset("reconstruction_esc", data=t.numpy())
        f.attrs["max"] = float(t.max())
        f.create_dataset("ismrmrd_header", data=_header_xml(lim))
    out = tmp_path / "o.h5"
    assert main(["--quiet", "reconstruct", str(path), "--sampler", "zero-filled", "--out", str(out)]) == 0
    with h5py.File(out) as h:
        assert h["reconstruction"].shape == (1,) + REC and h.attrs["psnr"] > 15


def _header_xml(lim):
    ns = "http://www.ismrm.org/ISMRMRD"
    return (f'<?xml version="1.0"?><ismrmrdHeader xmlns="{ns}"><encoding>'
            f"<encodedSpace><matrixSize><x>{ENC[0]}</x><y>{ENC[1]}</y><z>1</z></matrixSize></encodedSpace>"
            f"<reconSpace><matrixSize><x>{REC[0]}</x><y>{REC[1]}</y><z>1</z></matrixSize></reconSpace><encodingLimits>"
            f"<kspace_encoding_step_1><minimum>0</minimum><maximum>{lim[1]}</maximum><center>{lim[0]}</center>"
            f"</kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>")
