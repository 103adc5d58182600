"""Image-domain operators: adjoints and what they compute."""
import pytest
import torch

from operators import ShapeError, adjoint_error
from operators.image import Blur, Downsample, Inpainting


def test_adjoints():
    m = (torch.rand(12, 10, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    assert adjoint_error(Inpainting(m), (2,)) < 1e-5
    assert adjoint_error(Downsample((12, 10), 2), (3,)) < 1e-5
    assert adjoint_error(Downsample((4, 12, 10), (2, 1, 1)), dtype=torch.float64) < 1e-10   # along slices
    assert adjoint_error(Blur(Blur.gaussian(1.2), (12, 10)), (2,)) < 1e-5
    assert adjoint_error(Blur(torch.rand(3, 5), (12, 10)), dtype=torch.float32) < 1e-5


def test_what_they_compute():
    x = torch.arange(16.0).reshape(4, 4)
    assert torch.equal(Downsample((4, 4), 2)(x), torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    vol = torch.stack([torch.zeros(2, 2), torch.ones(2, 2) * 4])
    assert torch.equal(Downsample((2, 2, 2), (2, 1, 1))(vol), torch.full((1, 2, 2), 2.0))
    delta = torch.zeros(7, 7)
    delta[3, 3] = 1
    k = torch.rand(3, 3)
    assert torch.allclose(Blur(k, (7, 7))(delta)[2:5, 2:5], k)  # the impulse response is the kernel
    assert torch.allclose(Blur.gaussian(1.0).sum(), torch.tensor(1.0))
    with pytest.raises(ShapeError, match="not divisible"):
        Downsample((5, 4), 2)
    with pytest.raises(ValueError, match="only 0"):
        Inpainting(torch.full((4, 4), 0.5))
    with pytest.raises(ValueError, match="odd sides"):
        Blur(torch.ones(2, 2))
