"""Gaussian inverse problems whose posterior is known in closed form (shared by the sampler tests)."""
import torch

from operators import Multiply, SingleCoilMRI
from recon.priors.gaussian import GaussianDenoiser, gaussian_posterior
from recon.priors.prior import DiffusionPrior


def smooth_gaussian(shape, channels=1, length=1.5, amp=1.0, seed=0):
    """mu (channels, H, W) and a smooth covariance over the channels*H*W real entries."""
    h, w = shape
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).double()
    k = amp * torch.exp(-torch.cdist(pos, pos) ** 2 / (2 * length ** 2))
    cov = torch.kron(torch.eye(channels, dtype=torch.float64) + 0.3 * (1 - torch.eye(channels, dtype=torch.float64)), k)
    cov = cov + 0.05 * torch.eye(cov.shape[0], dtype=torch.float64)
    mu = 0.5 * torch.randn((channels, h, w), generator=g, dtype=torch.float64)
    return mu, cov


def real_matrix(A, shape, complex_input):
    """The real matrix of A acting on the real vector [Re x; Im x] (complex) or x (real), output [Re y; Im y]."""
    n = 1
    for s in shape:
        n *= s
    cols = []
    for j in range(2 * n if complex_input else n):
        e = torch.zeros(2 * n if complex_input else n, dtype=torch.float64)
        e[j] = 1
        x = torch.complex(e[:n], e[n:]).reshape(shape) if complex_input else e.reshape(shape)
        y = A.to(torch.float64)(x.to(torch.complex128) if complex_input else x)
        cols.append(torch.cat([y.real.flatten(), y.imag.flatten()]) if y.is_complex() else y.flatten())
    return torch.stack(cols, 1)


def inpainting_problem(noise=0.05, seed=0):
    """Real 4x4 images, half the pixels observed with Gaussian noise."""
    mu, cov = smooth_gaussian((4, 4), 1, seed=seed)
    mask = torch.zeros(4, 4)
    mask[::2, :] = 1
    mask[1, 1] = 1
    A = Multiply(mask)
    g = torch.Generator().manual_seed(seed + 1)
    x = mu[0] + (torch.linalg.cholesky(cov) @ torch.randn(16, generator=g, dtype=torch.float64)).reshape(4, 4)
    y = (A(x) + noise * mask * torch.randn(4, 4, generator=g, dtype=torch.float64)).float()
    prior = DiffusionPrior(GaussianDenoiser(mu[0], cov), channels="real")
    Ar = real_matrix(A, (4, 4), False)
    m, c = gaussian_posterior(mu[0], cov, Ar, y.double(), max(noise, 1e-4))
    return prior, A, y, m.reshape(4, 4), c.diagonal().reshape(4, 4)


def mri_problem(noise=0.05, seed=0):
    """Complex 4x6 images (a 2-channel Gaussian prior), single-coil Cartesian MRI with a line mask."""
    shape = (4, 6)
    mu, cov = smooth_gaussian(shape, 2, seed=seed)
    mask = torch.tensor([[1.0, 0, 1, 1, 0, 1]])
    A = SingleCoilMRI(mask)
    g = torch.Generator().manual_seed(seed + 1)
    v = mu.flatten() + torch.linalg.cholesky(cov) @ torch.randn(48, generator=g, dtype=torch.float64)
    x = torch.complex(v[:24], v[24:]).reshape(shape)
    n = noise / 2 ** 0.5 * torch.complex(torch.randn(shape, generator=g, dtype=torch.float64),
                                         torch.randn(shape, generator=g, dtype=torch.float64))
    y = (A(x.to(torch.complex128)) + mask * n).to(torch.complex64)
    prior = DiffusionPrior(GaussianDenoiser(mu, cov), channels="complex")
    Ar = real_matrix(A, shape, True)
    yr = torch.cat([y.real.flatten(), y.imag.flatten()]).double()
    m, c = gaussian_posterior(mu.flatten(), cov, Ar, yr, max(noise / 2 ** 0.5, 1e-4))
    mean = torch.complex(m[:24], m[24:]).reshape(shape)
    var = (c.diagonal()[:24] + c.diagonal()[24:]).reshape(shape)  # E|x - m|^2 per pixel
    return prior, A, y, mean, var


def stationary_mri_problem(seed=0):
    """A complex Gaussian prior whose covariance is diagonal in k-space (independent Fourier coefficients),
    noiseless single-coil Cartesian data. The posterior is then exact and simple: measured coefficients equal
    y, unmeasured ones keep their prior distribution; projection samplers are exact here."""
    from operators import ifft2c
    shape = (4, 6)
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(4) - 2, torch.arange(6) - 3, indexing="ij")
    lam = 1.0 / (1 + 0.5 * (yy ** 2 + xx ** 2)).double().flatten()          # power per coefficient
    Finv = real_matrix(type("F", (), {"to": lambda self, d: self, "__call__": lambda self, c: ifft2c(c)})(),
                       shape, True)
    cov = Finv @ torch.diag(torch.cat([lam, lam]) / 2) @ Finv.T + 1e-9 * torch.eye(48, dtype=torch.float64)
    mu = 0.3 * torch.randn((2,) + shape, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1.0, 0, 1, 1, 0, 1]])
    A = SingleCoilMRI(mask)
    v = mu.flatten() + torch.linalg.cholesky(cov) @ torch.randn(48, generator=g, dtype=torch.float64)
    x = torch.complex(v[:24], v[24:]).reshape(shape)
    y = A(x).to(torch.complex64)
    prior = DiffusionPrior(GaussianDenoiser(mu, cov, sigma_min=1e-3, sigma_max=20.0), channels="complex")
    from operators import fft2c
    muc = torch.complex(mu[0], mu[1])
    k_mean = torch.where(mask.bool(), y.to(torch.complex128), fft2c(muc))
    k_var = torch.where(mask.bool(), torch.zeros(shape, dtype=torch.float64), lam.reshape(shape))
    return prior, A, y, k_mean, k_var


def sample_stats(x):
    """Mean and per-pixel variance E|x - mean|^2 over the samples (dim 0), in double precision."""
    x = x.to(torch.complex128) if x.is_complex() else x.double()
    mean = x.mean(0)
    return mean, (x - mean).abs().square().mean(0)


def relative_error(a, b) -> float:
    """||a - b|| / ||b||."""
    return float((a - b).abs().norm() / b.abs().norm())
