"""Coil combination, cropping and zero-filled reconstruction, checked against the definitions and fastMRI."""
import fastmri
import fastmri.data.transforms as T
import pytest
import torch

from operators.fft import fft2c
from recon.data import center_crop, rss, sense_combine, zero_filled


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.complex128)


def _normalised_maps(*shape, seed=1):
    maps = _randn(*shape, seed=seed)
    return maps / maps.abs().square().sum(-3, keepdim=True).sqrt()


def test_rss_is_root_sum_of_squares():
    x = _randn(2, 4, 9, 7)
    expected = (x.real ** 2 + x.imag ** 2).sum(-3).sqrt()
    torch.testing.assert_close(rss(x), expected)
    torch.testing.assert_close(rss(x, dim=0), (x.real ** 2 + x.imag ** 2).sum(0).sqrt())
    torch.testing.assert_close(rss(x.real), x.real.abs().square().sum(-3).sqrt())


def test_sense_combine_recovers_image_from_normalised_maps():
    maps, x = _normalised_maps(2, 5, 9, 7), _randn(2, 9, 7, seed=2)
    torch.testing.assert_close(sense_combine(maps * x[:, None], maps), x)
    maps[:, :, 0, 0] = 0  # no coil sees this pixel: 0, not NaN
    out = sense_combine(maps * x[:, None], maps)
    assert out[:, 0, 0].abs().max() == 0 and torch.isfinite(out).all()


def test_sense_combine_formula():
    maps, coils = _randn(3, 6, 5, seed=3), _randn(3, 6, 5, seed=4)
    expected = (maps.conj() * coils).sum(0) / maps.abs().square().sum(0).sqrt()
    torch.testing.assert_close(sense_combine(coils, maps, dim=0), expected)


@pytest.mark.parametrize("shape, crop", [((10, 8), (4, 4)), ((11, 9), (4, 5)), ((9, 9), (9, 9)), ((8, 7), (3, 6))])
def test_center_crop_matches_fastmri(shape, crop):
    x = _randn(2, *shape)
    out = center_crop(x, crop)
    assert out.shape == (2, *crop) and out.dtype == x.dtype
    torch.testing.assert_close(out, T.center_crop(x, crop))


def test_center_crop_larger_than_image_raises():
    with pytest.raises(ValueError, match=r"cannot crop an image of size \(8, 6\) to \(4, 7\)"):
        center_crop(torch.zeros(8, 6), (4, 7))


def test_zero_filled_matches_fastmri_and_inverts_fft():
    kspace = _randn(2, 4, 12, 10).to(torch.complex64)
    reference = fastmri.rss_complex(fastmri.ifft2c(torch.view_as_real(kspace)), dim=1)
    torch.testing.assert_close(zero_filled(kspace), reference, rtol=1e-5, atol=1e-6)
    maps, x = _normalised_maps(4, 12, 10), _randn(12, 10, seed=5)
    torch.testing.assert_close(zero_filled(fft2c(maps * x), maps), x)
