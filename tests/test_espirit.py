import numpy as np
import pytest
import sigpy
import torch

from operators import espirit
from operators.fft import fft2c, ifft2c
from recon.data.simulate import coil_maps, phantom, simulate_multicoil

N, C = 128, 8


@pytest.fixture(scope="module")
def data():
    x = phantom((N, N), seed=0)
    s = coil_maps(C, (N, N))
    k = simulate_multicoil(x, s, snr_db=20, seed=0)
    mask = torch.zeros(N)
    mask[::4] = 1
    mask[N // 2 - 12:N // 2 + 12] = 1  # central 24 columns plus every 4th: about 4x
    return dict(x=x, maps=s, full=k, under=k * mask, obj=x.abs() > 0.1 * x.abs().max())


@pytest.fixture(scope="module")
def estimates(data):
    return {(b, kind): espirit.maps(data[kind], backend=b) for b in ("sigpy", "torch") for kind in ("full", "under")}


def correlation(est, true):
    """Per-pixel |<s_est, s_true>_C| / (||s_est|| ||s_true||)."""
    num = (est.conj() * true).sum(-3).abs()
    return num / (torch.linalg.vector_norm(est, dim=-3) * torch.linalg.vector_norm(true, dim=-3) + 1e-12)


@pytest.mark.parametrize("shape", [(16, 16), (15, 21)])
def test_sigpy_fft_is_ours(shape):
    x = np.random.default_rng(0).standard_normal((3, *shape)) * (1 + 1j)
    x = x.astype(np.complex64)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(sigpy.fft(x, axes=(-2, -1)), fft2c(t).numpy(), atol=1e-5)
    np.testing.assert_allclose(sigpy.ifft(x, axes=(-2, -1)), ifft2c(t).numpy(), atol=1e-5)


@pytest.mark.parametrize("backend", ["sigpy", "torch"])
@pytest.mark.parametrize("kind", ["full", "under"])
def test_maps_match_true_maps(data, estimates, backend, kind):
    est = estimates[backend, kind]
    assert est.shape == (C, N, N) and est.dtype == torch.complex64
    corr = correlation(est, data["maps"])[data["obj"]].mean().item()
    print(f"{backend} {kind}: mean correlation inside object {corr:.6f}")
    assert corr > 0.95
    support = est.abs().sum(0) > 0
    assert support[data["obj"]].all()
    torch.testing.assert_close(est.abs().square().sum(0)[support], torch.ones(int(support.sum())), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["full", "under"])
def test_torch_matches_sigpy(estimates, kind):
    """Same algorithm, same start of the power iteration: same maps to 1e-4 and the same cropped support."""
    a, b = estimates["sigpy", kind], estimates["torch", kind]
    assert torch.equal(a.abs().sum(0) > 0, b.abs().sum(0) > 0)
    assert (a - b).abs().max() < 1e-4


def test_auto_is_torch(data, estimates):
    torch.testing.assert_close(espirit.maps(data["under"]), estimates["torch", "under"], atol=0, rtol=0)


@pytest.mark.parametrize("backend", ["sigpy", "torch"])
def test_batch_equals_one_at_a_time(backend):
    n = 48
    x = torch.stack([phantom((n, n), seed=1), phantom((n, n), seed=2).flip(-1)])
    s = coil_maps(4, (n, n))
    k = simulate_multicoil(x, torch.stack([s, s.roll(1, 0)]), snr_db=25, seed=3)[:, None]  # (2, 1, 4, n, n)
    kw = dict(calib_width=16, kernel_width=5, backend=backend)
    batch = espirit.maps(k, **kw)
    assert batch.shape == k.shape
    for i in range(2):
        torch.testing.assert_close(batch[i, 0], espirit.maps(k[i, 0], **kw), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(kspace=torch.ones(32, 32, dtype=torch.complex64)), "rank >= 3"),
        (dict(calib_width=40), "calib_width=40"),
        (dict(kernel_width=8, calib_width=6), "kernel_width=8"),
        (dict(threshold=0.0), "threshold"),
        (dict(threshold=1.5), "threshold"),
        (dict(crop=1.0), "crop"),
        (dict(crop=-0.1), "crop"),
        (dict(backend="cupy"), "backend"),
        (dict(nan=True), "NaN or Inf"),
        (dict(inf=True), "NaN or Inf"),
        (dict(empty_calib=True), "not sampled"),
    ],
)
def test_bad_inputs(change, message):
    k = torch.randn(2, 4, 32, 32, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    if change.pop("nan", False):
        k[1, 0, 3, 3] = complex("nan")
    if change.pop("inf", False):
        k[0, 2, 0, 1] = complex("inf")
    if change.pop("empty_calib", False):
        k[1, :, 4:28, 4:28] = 0
    kw = dict(kspace=k, calib_width=24)
    kw.update(change)
    with pytest.raises(ValueError, match=message):
        espirit.maps(**kw)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_backend_on_gpu(data, estimates):
    est = espirit.maps(data["under"].cuda())
    assert est.device.type == "cuda"
    assert (est.cpu() - estimates["torch", "under"]).abs().max() < 1e-4
