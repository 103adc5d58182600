import math

import pytest
import torch

from operators.fft import fft2c
from recon.data.simulate import coil_maps, phantom, simulate_multicoil, simulate_singlecoil, snr_to_noise_std

SHAPE = (64, 48)


def test_coil_maps_normalised_and_complex():
    s = coil_maps(8, SHAPE)
    assert s.shape == (8, *SHAPE) and s.dtype == torch.complex64
    torch.testing.assert_close(s.abs().square().sum(0), torch.ones(SHAPE), atol=1e-5, rtol=0)
    assert s.angle().std() > 0.2  # genuinely complex, not just magnitudes
    with pytest.raises(ValueError, match="unknown coil map kind"):
        coil_maps(8, SHAPE, kind="gaussian")


def test_phantom():
    x = phantom(SHAPE, seed=0)
    assert x.shape == SHAPE and x.dtype == torch.complex64
    assert abs(x.abs().max().item() - 1) < 1e-6
    torch.testing.assert_close(x.abs(), phantom(SHAPE, phase=False).real)
    assert torch.equal(x, phantom(SHAPE, seed=0))
    assert not torch.equal(x, phantom(SHAPE, seed=1))
    obj = x.abs() > 0.1
    assert x[obj].angle().std() > 0.1
    with pytest.raises(ValueError, match="unknown phantom kind"):
        phantom(SHAPE, kind="brain")


def measured_snr_db(clean, noisy, ndim):
    dims = tuple(range(-ndim, 0))
    return 20 * torch.log10(torch.linalg.vector_norm(clean, dim=dims) / torch.linalg.vector_norm(noisy - clean, dim=dims))


@pytest.mark.parametrize("snr_db", [0.0, 15.0, 30.0])
def test_stated_snr_multicoil(snr_db):
    x = torch.stack([phantom(SHAPE, seed=0), 3 * phantom(SHAPE, seed=1)])  # two slices, different scales
    s = coil_maps(6, SHAPE)
    clean = simulate_multicoil(x, s)
    torch.testing.assert_close(clean, fft2c(s * x[:, None]))
    noisy = simulate_multicoil(x, s, snr_db=snr_db, generator=torch.Generator().manual_seed(0))
    # within 2 % in amplitude ratio, i.e. 0.17 dB
    assert (measured_snr_db(clean, noisy, 3) - snr_db).abs().max() < 20 * math.log10(1.02)


def test_stated_snr_singlecoil_and_noise_std():
    x = phantom(SHAPE)
    clean = simulate_singlecoil(x)
    noisy = simulate_singlecoil(x, snr_db=10, seed=4)
    assert abs(measured_snr_db(clean, noisy, 2).item() - 10) < 20 * math.log10(1.02)
    n = simulate_singlecoil(x, noise_std=0.5, seed=4) - clean
    assert abs(n.abs().square().mean().sqrt().item() - 0.5) < 0.02
    assert abs(n.real.var().item() - n.imag.var().item()) < 0.02  # circular: half the variance each
    std = snr_to_noise_std(clean, 10, 2)
    torch.testing.assert_close(std, clean.abs().square().mean().sqrt() / 10 ** 0.5)


def test_seeds():
    x, s = phantom(SHAPE), coil_maps(4, SHAPE)
    state = torch.random.get_rng_state()
    a = simulate_multicoil(x, s, snr_db=20, seed=7)
    b = simulate_multicoil(x, s, snr_db=20, generator=torch.Generator().manual_seed(7))
    c = simulate_multicoil(x, s, snr_db=20, seed=8)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(a, b)
    clean = simulate_multicoil(x, s)
    na, nc = (a - clean).flatten(), (c - clean).flatten()
    assert abs(torch.vdot(na, nc)).item() < 0.05 * na.norm() * nc.norm()  # independent noise


def test_noise_argument_errors():
    x = phantom(SHAPE)
    with pytest.raises(ValueError, match="not both"):
        simulate_singlecoil(x, snr_db=10, noise_std=1.0, seed=0)
    with pytest.raises(ValueError, match="generator"):
        simulate_singlecoil(x, snr_db=10)
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        simulate_singlecoil(x, noise_std=-1.0, seed=0)
