"""fastMRI HDF5 reading/writing: round trips, lazy selection, fastMRI header compatibility, atomicity, errors."""
import dataclasses
import pickle

import h5py
import numpy as np
import pytest
import torch
from fastmri.data.mri_data import SliceDataset

from recon.data import DataError, FastMRIHeader, load_fastmri, write_fastmri

S, C, H, W = 4, 3, 16, 12


def _kspace(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.complex64)


def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f.create_dataset(name, data=data)
    return path


def _error(match, fn, *args, **kwargs):
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.fixture
def multicoil(tmp_path):
    k = _kspace(S, C, H, W)
    target = torch.rand(S, 8, 8)
    mask = (torch.arange(W) % 3 == 0).float()
    attrs = {"acquisition": "CORPD_FBK", "patient_id": "abc", "acceleration": 4, "num_low_frequencies": 2}
    path = write_fastmri(tmp_path / "multi.h5", k, target=target, mask=mask, attrs=attrs)
    return path, k, target, mask, attrs


def test_multicoil_round_trip(multicoil):
    path, k, target, mask, attrs = multicoil
    vol = load_fastmri(path)
    assert vol.is_multicoil and vol.shape == (S, C, H, W) and len(vol) == vol.num_slices == S and vol.num_coils == C
    assert vol.has_target and vol.target_key == "reconstruction_rss"
    x = vol.kspace(1)
    assert x.dtype == torch.complex64 and x.shape == (C, H, W)
    torch.testing.assert_close(x, k[1], rtol=0, atol=0)
    torch.testing.assert_close(vol.kspace(slice(1, 3)), k[1:3], rtol=0, atol=0)
    t = vol.target(2)
    assert t.dtype == torch.float32 and t.shape == (8, 8)
    torch.testing.assert_close(t, target[2], rtol=0, atol=0)
    assert vol.mask.dtype == torch.float32 and vol.mask.shape == (1, W)
    torch.testing.assert_close(vol.mask[0], mask)
    assert {k: vol.attrs[k] for k in attrs} == attrs and vol.attrs["max"] == pytest.approx(target.max().item())
    assert vol.header.encoding_size == vol.encoding_size == (H, W, 1)
    assert vol.header.recon_size == vol.recon_size == (8, 8, 1)
    assert vol.header.encoding_limits == (W // 2, W - 1)


def test_singlecoil_round_trip(tmp_path):
    k, target = _kspace(3, H, W), torch.rand(3, H, W)
    vol = load_fastmri(write_fastmri(tmp_path / "single.h5", k, target=target))
    assert not vol.is_multicoil and vol.shape == (3, 1, H, W) and vol.mask is None
    assert vol.target_key == "reconstruction_esc"
    assert vol.kspace(0).shape == (1, H, W) and vol.kspace(range(3)).shape == (3, 1, H, W)
    torch.testing.assert_close(vol.kspace(range(3))[:, 0], k, rtol=0, atol=0)
    torch.testing.assert_close(vol.target(slice(None)), target, rtol=0, atol=0)
    with h5py.File(tmp_path / "single.h5") as f:
        assert f["kspace"].shape == (3, H, W)


def test_lazy_selection_reads_only_the_selected_slices(multicoil, monkeypatch):
    path, k, *_ = multicoil
    vol = load_fastmri(path)
    read = []
    original = h5py.Dataset.__getitem__

    def spy(self, sel):
        out = original(self, sel)
        read.append(np.shape(out)[0] if np.ndim(out) else 0)
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    cases = [(-1, k[-1]), (slice(None, None, 2), k[::2]), (range(3, 0, -1), k[[3, 2, 1]]), (slice(2, 2), k[2:2]),
             (slice(None, None, -2), k[[3, 1]]), (np.int64(2), k[2])]
    for idx, expected in cases:
        read.clear()
        torch.testing.assert_close(vol.kspace(idx), expected, rtol=0, atol=0)
        assert sum(read) == (len(expected) if expected.ndim == 4 else 1)


def test_volume_holds_no_file_handle_and_pickles(multicoil):
    path, k, *_ = multicoil
    vol = load_fastmri(path)
    vol.kspace(0), vol.target(0)
    with pytest.raises(DataError):
        vol.kspace(S)
    h5py.File(path, "r+").close()  # fails if a read-only handle were still open
    torch.testing.assert_close(pickle.loads(pickle.dumps(vol)).kspace(1), k[1])


def test_fastmri_parser_reads_our_header(multicoil):
    path, *_ = multicoil
    metadata, num_slices = SliceDataset._retrieve_metadata(None, path)
    assert num_slices == S
    assert metadata["encoding_size"] == (H, W, 1) and metadata["recon_size"] == (8, 8, 1)
    assert (metadata["padding_left"], metadata["padding_right"]) == (0, W)
    assert metadata["acquisition"] == "CORPD_FBK"


def test_custom_header_keeps_the_rest_of_the_xml(tmp_path):
    xml = ('<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><studyInformation><studyID>7</studyID>'
           '</studyInformation><encoding><encodedSpace><matrixSize><x>640</x><y>368</y><z>1</z></matrixSize>'
           '</encodedSpace></encoding></ismrmrdHeader>')
    header = FastMRIHeader.from_xml(xml, (1, 1, 1), (2, 2, 1))
    assert header.encoding_size == (640, 368, 1) and header.recon_size == (2, 2, 1)
    assert header.encoding_limits is None
    header = dataclasses.replace(header, recon_size=(320, 320, 1), encoding_limits=(160, 330))
    vol = load_fastmri(write_fastmri(tmp_path / "h.h5", _kspace(1, 2, H, W), header=header))
    assert vol.header.encoding_size == (640, 368, 1) and vol.header.recon_size == (320, 320, 1)
    assert vol.header.encoding_limits == (160, 330) and "<studyID>7</studyID>" in vol.header.xml
    metadata, _ = SliceDataset._retrieve_metadata(None, tmp_path / "h.h5")
    assert metadata["recon_size"] == (320, 320, 1) and metadata["padding_left"] == 368 // 2 - 160


def test_missing_or_malformed_header_infers_sizes(tmp_path):
    k = _kspace(2, C, H, W).numpy()
    vol = load_fastmri(_h5(tmp_path / "no_header.h5", kspace=k, reconstruction_rss=np.ones((2, 8, 6), np.float32)))
    assert vol.header is None and vol.encoding_size == (H, W, 1) and vol.recon_size == (8, 6, 1)
    with pytest.warns(UserWarning, match="unreadable ismrmrd_header"):
        vol = load_fastmri(_h5(tmp_path / "bad_header.h5", kspace=k, ismrmrd_header="<ismrmrdHeader><oops>"))
    assert vol.header is None and vol.recon_size == (H, W, 1) and not vol.has_target and vol.target(0) is None


def test_write_is_atomic(tmp_path, multicoil):
    path, k, *_ = multicoil
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi.h5"]
    before = path.read_bytes()
    bad = k.clone()
    bad[2, 0, 3, 3] = float("nan")
    _error(r"slice\(s\) \[2\] contain NaN", write_fastmri, path, bad)
    # fails half-way through writing the file: an attribute HDF5 cannot store
    _error("attribute 'bad'", write_fastmri, path, k, attrs={"bad": {"a": 1}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi.h5"]


def test_open_errors(tmp_path, multicoil):
    path, *_ = multicoil
    _error("no such file", load_fastmri, tmp_path / "missing.h5")
    _error("is a directory", load_fastmri, tmp_path)
    (tmp_path / "text.h5").write_text("not hdf5")
    _error("text.h5: not an HDF5 file", load_fastmri, tmp_path / "text.h5")
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    _error("cut.h5: cannot open, the HDF5 file is truncated or corrupt", load_fastmri, tmp_path / "cut.h5")


def test_layout_errors(tmp_path):
    msg = _error("no 'kspace' dataset", load_fastmri, _h5(tmp_path / "a.h5", image=np.zeros(3), other=np.ones(2)))
    assert "image" in msg and "other" in msg
    _error(r"k-space has 2 dims \(4, 4\), expected 3", load_fastmri, _h5(tmp_path / "b.h5", kspace=np.zeros((4, 4), np.complex64)))
    _error("k-space is not complex", load_fastmri, _h5(tmp_path / "c.h5", kspace=np.zeros((2, 4, 4), np.float32)))
    _error(r"reconstruction_rss has shape \(3, 4, 4\)", load_fastmri,
           _h5(tmp_path / "d.h5", kspace=np.zeros((2, 1, 4, 4), np.complex64), reconstruction_rss=np.zeros((3, 4, 4))))
    _error("mask has shape", load_fastmri,
           _h5(tmp_path / "e.h5", kspace=np.zeros((2, 1, 4, 4), np.complex64), mask=np.ones(5)))


def test_read_errors(tmp_path):
    k = _kspace(S, C, H, W).numpy()
    k[2, 1, 0, 0] = np.inf
    vol = load_fastmri(_h5(tmp_path / "nan.h5", kspace=k))
    vol.kspace(1)
    assert "nan.h5" in _error(r"k-space slice\(s\) \[2\] contain NaN or Inf", vol.kspace, 2)
    _error(r"slice\(s\) \[2\]", vol.kspace, slice(1, 4))
    _error(r"slice index 4 out of range; the volume has 4 slices \(valid indices 0..3\)", vol.kspace, 4)
    _error("slice index -5 out of range", vol.target, -5)
    _error("slice bound 9 out of range", vol.kspace, slice(0, 9))
    _error("slice range range", vol.kspace, range(2, 6))
    with pytest.raises(TypeError, match="int, slice or range"):
        vol.kspace(1.0)


def test_write_errors(tmp_path):
    p = tmp_path / "w.h5"
    _error(r"w.h5: k-space has 2 dims", write_fastmri, p, _kspace(H, W))
    _error("k-space is not complex", write_fastmri, p, torch.zeros(2, H, W))
    _error(r"target has shape \(3, 8, 8\)", write_fastmri, p, _kspace(2, C, H, W), target=torch.zeros(3, 8, 8))
    _error("target has shape", write_fastmri, p, _kspace(2, C, H, W), target=_kspace(2, 8, 8))
    _error("mask has 5 entries, expected 12", write_fastmri, p, _kspace(2, C, H, W), mask=torch.ones(5))
    _error("does not exist", write_fastmri, tmp_path / "nodir" / "x.h5", _kspace(2, C, H, W))
    assert list(tmp_path.iterdir()) == []
