"""The operator algebra, the MRI operators, CG and the sparsifying transforms."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from operators import (CoilwiseMRI, Identity, Multiply, MultiCoilMRI, ShapeError, SingleCoilMRI,
                       adjoint_error, conjugate_gradient, fft2c, ifft2c, solve_normal)
from operators.linop import inner
from operators.linop import power_iteration
from operators.transforms import CenterPad, FiniteDifference, Wavelet, pad_to_wavelet

TOL = 1e-5


def cplx(*shape, seed=0):
    return torch.randn(shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed))


def line_mask(w, seed=0, p=0.4):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, w, generator=g) < p).float()


# --- FFT ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (3, 16, 15)])
def test_fft_matches_fastmri_convention_and_is_unitary(shape):
    x = cplx(*shape)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    assert np.allclose(fft2c(x).numpy(), ref, atol=1e-5)
    assert torch.allclose(ifft2c(fft2c(x)), x, atol=1e-5)
    assert torch.allclose(fft2c(x).norm(), x.norm(), rtol=1e-5)
    # DC of a constant image sits at the centre (H//2, W//2)
    k = fft2c(torch.ones(shape[-2:], dtype=torch.complex64))
    assert k.abs().argmax() == (shape[-2] // 2) * shape[-1] + shape[-1] // 2


# --- adjoint tests ---------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(h=st.integers(2, 40), w=st.integers(2, 40), c=st.integers(1, 6), b=st.integers(0, 3),
       seed=st.integers(0, 2 ** 16))
def test_adjoints_random_shapes(h, w, c, b, seed):
    batch = (b,) if b else ()
    mask = line_mask(w, seed)
    maps = cplx(c, h, w, seed=seed)
    fill = {("i", 0): h, ("o", 0): h}
    assert adjoint_error(SingleCoilMRI(mask), batch, fill=fill) < TOL
    assert adjoint_error(MultiCoilMRI(maps, mask), batch) < TOL
    assert adjoint_error(CoilwiseMRI(mask, c), batch, fill={("i", 1): h, ("o", 1): h}) < TOL
    assert adjoint_error(FiniteDifference((h, w)), batch) < TOL
    assert adjoint_error(Multiply(cplx(h, w, seed=seed + 1)), batch) < TOL


@pytest.mark.parametrize("shape", [(15, 64, 48), (8, 33, 17), (2, 4, 20, 20)])
def test_multicoil_adjoint_2d_masks_and_sliced_maps(shape):
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(shape[-2:], generator=g) < 0.3).float()
    A = MultiCoilMRI(cplx(*shape), mask)
    assert A.ishape == shape[:-3] + shape[-2:]
    assert adjoint_error(A) < TOL and adjoint_error(A, (3,)) < TOL


def test_algebra_adjoints_and_normal():
    mask = line_mask(20)
    A = MultiCoilMRI(cplx(4, 16, 20), mask)
    for op in (A.H, (2 - 1j) * A, A * 3.0, A.H @ A, A @ Identity((16, 20)), A + A, A - 0.5 * A):
        assert adjoint_error(op) < TOL, op
    assert A.H.H is A
    x = cplx(3, 16, 20, seed=2)
    assert torch.allclose(A.normal(x), A.H(A(x)), atol=1e-5)
    assert torch.allclose(((2 - 1j) * A).normal(x), 5 * A.normal(x), atol=1e-4)
    assert torch.allclose((A.H @ A)(x), A.normal(x), atol=1e-5)
    assert torch.allclose((1j * Identity((16, 20))).H(x), -1j * x)


def test_weighted_mask_normal_uses_squared_weights():
    mask = torch.linspace(0, 1, 12)[None]
    A = SingleCoilMRI(mask)
    x = cplx(12, 12)
    assert torch.allclose(A.normal(x), A.H(A(x)), atol=1e-5)


def test_multicoil_forward_is_masked_fft_of_coil_images():
    maps, x = cplx(3, 8, 10), cplx(8, 10, seed=1)
    mask = line_mask(10)
    y = MultiCoilMRI(maps, mask)(x)
    assert torch.allclose(y, mask * fft2c(maps * x), atol=1e-6)
    assert torch.allclose(MultiCoilMRI(maps, mask).H(y), (maps.conj() * ifft2c(mask * y)).sum(0), atol=1e-5)


# --- shapes, errors, moves ---------------------------------------------------------------------------
def test_shape_errors_are_clear():
    A = MultiCoilMRI(cplx(4, 16, 20), line_mask(20))
    with pytest.raises(ShapeError, match=r"expects input of shape \(\.\.\., 16, 20\), got \(16, 21\)"):
        A(cplx(16, 21))
    with pytest.raises(ShapeError, match=r"MultiCoilMRI.H expects input of shape \(\.\.\., 4, 16, 20\)"):
        A.H(cplx(3, 16, 20))
    with pytest.raises(ShapeError, match="does not broadcast"):
        MultiCoilMRI(cplx(4, 16, 20), line_mask(21))
    with pytest.raises(ShapeError, match="maps must have shape"):
        MultiCoilMRI(cplx(16, 20), line_mask(20))
    with pytest.raises(ShapeError, match="cannot compose"):
        A @ Identity((8, 8))
    with pytest.raises(ValueError, match="must be real"):
        SingleCoilMRI(cplx(1, 8))
    with pytest.raises(ValueError, match="NaN or Inf"):
        SingleCoilMRI(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        MultiCoilMRI(torch.full((2, 4, 4), float("inf"), dtype=torch.complex64), torch.ones(1, 4))
    with pytest.raises(TypeError, match="scalar"):
        A * torch.ones(3)


def test_to_moves_dtype_and_keeps_complex():
    A = MultiCoilMRI(cplx(2, 8, 8), line_mask(8))
    B = A.to(torch.float64)
    assert B.maps.dtype == torch.complex128 and B.mask.dtype == torch.float64
    assert A.maps.dtype == torch.complex64  # original untouched
    x = torch.randn(8, 8, dtype=torch.complex128)
    assert B(x).dtype == torch.complex128
    assert adjoint_error(B, dtype=torch.complex128) < 1e-12


# --- conjugate gradient -------------------------------------------------------------------------------
def test_cg_matches_direct_solve_on_complex_hermitian_system():
    g = torch.Generator().manual_seed(3)
    n = 12
    M = torch.randn(n, n, dtype=torch.complex128, generator=g)
    H = M.conj().T @ M + 0.5 * torch.eye(n, dtype=torch.complex128)
    b = torch.randn(2, 3, n, dtype=torch.complex128, generator=g)
    x = conjugate_gradient(lambda v: v @ H.T, b, max_iter=n, ndim=1)
    ref = torch.linalg.solve(H, b.reshape(-1, n).T).T.reshape(b.shape)
    assert torch.allclose(x, ref, atol=1e-8)


def test_cg_without_conjugation_would_fail():
    """The Hermitian inner product matters: a transpose-only CG does not solve complex systems."""
    g = torch.Generator().manual_seed(4)
    n = 10
    M = torch.randn(n, n, dtype=torch.complex128, generator=g)
    H = M.conj().T @ M + torch.eye(n, dtype=torch.complex128)
    b = torch.randn(n, dtype=torch.complex128, generator=g)
    ref = torch.linalg.solve(H, b)
    x = conjugate_gradient(lambda v: H @ v, b, max_iter=n, ndim=1)
    assert torch.allclose(x, ref, atol=1e-8)
    # same recursion with sum(u*v) instead of sum(conj(u)*v)
    xb, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), (r * r).sum()
    for _ in range(n):
        ap = H @ p
        a = rr / (p * ap).sum()
        xb, r = xb + a * p, r - a * ap
        rr, rr_old = (r * r).sum(), rr
        p = r + rr / rr_old * p
    assert (xb - ref).norm() > 1e-3 * ref.norm()


def test_cg_batches_are_independent_and_warm_start_and_tol():
    mask = line_mask(16, p=0.5)
    A = MultiCoilMRI(cplx(4, 16, 16), mask)
    b = A.H(A(cplx(3, 16, 16, seed=5)))
    together = solve_normal(A, b, lam=0.1, max_iter=8)
    alone = torch.stack([solve_normal(A, b[i], lam=0.1, max_iter=8) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)
    exact = solve_normal(A, b, lam=0.1, max_iter=200, tol=1e-7)
    resid = (A.normal(exact) + 0.1 * exact - b).norm() / b.norm()
    assert resid < 1e-5
    # a warm start at the solution stays there
    assert torch.allclose(solve_normal(A, b, lam=0.1, x0=exact, max_iter=3), exact, atol=1e-5)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        solve_normal(A, b, lam=-1)


# --- transforms ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,levels,shape", [("haar", 1, (8, 6)), ("db2", 2, (16, 12)), ("db4", 3, (64, 48))])
def test_wavelet_is_orthonormal(name, levels, shape):
    W = Wavelet(shape, name, levels)
    x = cplx(2, *shape)
    assert adjoint_error(W) < TOL
    assert torch.allclose(W.H(W(x)), x, atol=1e-5)
    assert torch.allclose(W(x).norm(), x.norm(), rtol=1e-5)
    # a constant image has only an approximation coefficient block
    c = W(torch.ones(shape, dtype=torch.complex64))
    h, w = shape[0] >> levels, shape[1] >> levels
    assert c[h:, :].abs().max() < 1e-5 and c[:, w:].abs().max() < 1e-5


def test_wavelet_rejects_indivisible_shape_and_pad_helper():
    with pytest.raises(ShapeError, match="divisible"):
        Wavelet((30, 32), levels=2)
    assert pad_to_wavelet((30, 33), 2) == (32, 36)
    P = CenterPad((30, 33), (32, 36))
    assert adjoint_error(P) < TOL
    x = cplx(30, 33)
    assert torch.equal(P.H(P(x)), x)


def test_power_iteration_finds_laplacian_norm():
    lam = power_iteration(FiniteDifference().normal, torch.zeros(32, 32), n_iter=200)
    assert abs(lam - 8.0) < 0.1


# --- the noise estimate of the MRI operators ------------------------------------------------------------------
def _noisy_kspace(std, shape=(4, 96, 80), image=True, seed=0):
    from recon.data import phantoms, simulate
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    if image:
        from scipy import ndimage  # an object with edges an MR image has (a blurred Shepp-Logan)
        x = torch.nn.functional.interpolate(phantoms.shepp_logan(128)[None, None].float(), size=(h, w))[0, 0]
        x = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), 1.0))
        k = simulate.simulate_multicoil(x.to(torch.complex64), simulate.coil_maps(c, (h, w)))
    else:
        k = torch.zeros(shape, dtype=torch.complex64)
    return k + std * torch.randn(shape, dtype=torch.complex64, generator=g)


def test_mri_noise_estimate_recovers_the_noise_std_of_pure_noise_and_of_an_object():
    mask = (torch.rand(1, 80, generator=torch.Generator().manual_seed(1)) < 0.35).float()
    mask[:, 34:46] = 1
    maps = torch.ones(4, 96, 80, dtype=torch.complex64) / 2
    A = MultiCoilMRI(maps, mask)
    for std, image, tol in [(0.3, False, 0.1), (0.02, True, 0.15), (0.005, True, 0.3)]:
        y = mask * _noisy_kspace(std, image=image)
        est = A.noise_std(y)
        assert est.shape == ()
        assert abs(float(est) / std - 1) < tol, (std, image, float(est))
    single = SingleCoilMRI(mask)
    y = mask * _noisy_kspace(0.02)[0]
    assert abs(float(single.noise_std(y)) / 0.02 - 1) < 0.15


def test_mri_noise_estimate_ignores_exact_zeros_scales_with_the_data_and_is_per_slice():
    mask = torch.ones(1, 80)
    maps = torch.ones(2, 4, 96, 80, dtype=torch.complex64) / 2
    A = MultiCoilMRI(maps, mask)
    y = torch.stack([_noisy_kspace(0.02, seed=2), _noisy_kspace(0.08, seed=3)])
    est = A.noise_std(y)
    assert est.shape == (2,)
    assert abs(float(est[0]) / 0.02 - 1) < 0.15 and abs(float(est[1]) / 0.08 - 1) < 0.1
    dead = y.clone()
    dead[..., :6] = 0          # zero-padded / dead phase-encode lines are not noise
    dead[..., -40:, :] = 0     # nor is a zeroed half of the readout
    assert torch.allclose(A.noise_std(dead), est, rtol=0.2)
    assert torch.allclose(A.noise_std(3 * y), 3 * est, rtol=1e-5)
    assert torch.allclose((2.5 * A).noise_std(y), est)  # a property of y's values, not of the scale of A


def test_operators_that_cannot_tell_noise_from_signal_say_so():
    assert Multiply(torch.ones(4, 4)).noise_std(torch.ones(4, 4)) is None
    A = SingleCoilMRI(torch.zeros(1, 8))
    assert A.noise_std(torch.zeros(8, 8, dtype=torch.complex64)) is None  # nothing measured
    with pytest.raises(ShapeError):
        MultiCoilMRI(torch.ones(2, 8, 8, dtype=torch.complex64), torch.ones(1, 8)).noise_std(torch.ones(3, 8, 9))
