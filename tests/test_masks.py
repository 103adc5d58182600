"""Sampling masks: fastMRI conformance, variable-density masks, reporting, registry, input checks."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from operators import masks

subsample = pytest.importorskip("fastmri.data.subsample")

FASTMRI = {
    "random": (masks.RandomMask, subsample.RandomMaskFunc),
    "equispaced": (masks.EquispacedMask, subsample.EquiSpacedMaskFunc),
    "equispaced_fraction": (masks.EquispacedFractionMask, subsample.EquispacedMaskFractionFunc),
    "magic": (masks.MagicMask, subsample.MagicMaskFunc),
    "magic_fraction": (masks.MagicFractionMask, subsample.MagicMaskFractionFunc),
}
SHAPES = [(15, 640, 368), (1, 320, 320), (8, 640, 372), (33, 333)]
PARAMS = [([0.08], [4]), ([0.04], [8]), ([0.08, 0.04], [4, 8])]


def theirs(fn, shape, **kw):
    """fastmri's mask for our k-space shape (..., H, W), i.e. its real view (..., H, W, 2), as (1, W)."""
    mask, _ = fn(tuple(shape) + (2,), **kw)
    return mask.reshape(1, -1)


# --------------------------------------------------------------------------- fastMRI conformance


@pytest.mark.parametrize("name", FASTMRI)
@pytest.mark.parametrize("center_fractions, accelerations", PARAMS)
@pytest.mark.parametrize("any_combination", [False, True])
def test_fastmri_conformance(name, center_fractions, accelerations, any_combination):
    ours_cls, their_cls = FASTMRI[name]
    ours = ours_cls(center_fractions, accelerations, any_combination, seed=7)
    ref = their_cls(center_fractions, accelerations, any_combination, seed=7)
    for shape in SHAPES:
        # seeded calls interleaved with unseeded ones: seeded calls must leave both streams alone
        for seed in [0, None, 1, 2, None, None, 3, 4, None]:
            mask = ours(shape, seed=seed)
            assert mask.dtype == torch.float32 and mask.shape == (1, shape[-1])
            assert torch.equal(mask, theirs(ref, shape, seed=seed)), (shape, seed)


@pytest.mark.parametrize("name", ["equispaced", "magic"])
def test_fastmri_conformance_with_offset(name):
    ours_cls, their_cls = FASTMRI[name]
    ours, ref = ours_cls([0.08], [4]), their_cls([0.08], [4])
    for offset in range(4):
        assert torch.equal(ours((320, 368), seed=0, offset=offset), theirs(ref, (320, 368), seed=0, offset=offset))


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(FASTMRI)),
    num_cols=st.integers(8, 400),
    center_fraction=st.floats(0.01, 0.3),
    accel=st.integers(1, 10),
    seed=st.integers(0, 2**32 - 1),
)
def test_fastmri_conformance_random_sizes(name, num_cols, center_fraction, accel, seed):
    """Any size and parameters: equal masks, and we raise a ValueError exactly where fastmri fails."""
    ours_cls, their_cls = FASTMRI[name]
    shape = (2, 5, num_cols)
    try:
        ref = theirs(their_cls([center_fraction], [accel]), shape, seed=seed)
    except (ValueError, ZeroDivisionError):
        with pytest.raises(ValueError, match="center"):
            ours_cls([center_fraction], [accel])(shape, seed=seed)
        return
    assert torch.equal(ours_cls([center_fraction], [accel])(shape, seed=seed), ref)


@pytest.mark.parametrize("name", FASTMRI)
def test_seed_is_reproducible_and_does_not_advance_stream(name):
    cls = FASTMRI[name][0]
    shape = (4, 640, 368)
    a, fresh = cls([0.08, 0.04], [4, 8], seed=11), cls([0.08, 0.04], [4, 8], seed=11)
    first = a(shape, seed=5)
    assert torch.equal(first, a(shape, seed=5))
    for _ in range(4):
        assert torch.equal(a(shape), fresh(shape))
    assert torch.equal(first, a(shape, seed=5))


def test_fastmri_masks_have_calibration_centre():
    for name, (cls, _) in FASTMRI.items():
        mask = cls([0.08], [4])((640, 368), seed=0)
        assert masks.calibration_size(mask)[0] >= round(368 * 0.08), name


# --------------------------------------------------------------------------- variable-density masks

# Gaussian1D/Gaussian2D/Uniform2D sample exactly round(N / R) positions, so the only error is that rounding
# (< 0.5 / round(N / R), well under 1% here). Poisson: sigpy's slope search stops within 0.1 of R (1-2.5% at
# R = 4..8) and we add at most h + w calibration points. Radial: one spoke adds up to ~sqrt(H^2 + W^2) points
# (~4% of H W / R at 256 x 256, R = 8), and the closer spoke count is kept, so half of that plus overlap.
VARIABLE_DENSITY = [
    # (mask, shape, relative tolerance, requested calibration (h, w))
    (masks.Gaussian1DMask(4, center_fraction=0.08), (2, 320, 368), 0.01, (1, 29)),
    (masks.Gaussian1DMask(8, center_fraction=0.04, std_fraction=0.15), (333, 333), 0.01, (1, 13)),
    (masks.Gaussian2DMask(4, calib=24), (320, 320), 0.01, (24, 24)),
    (masks.Gaussian2DMask(8, calib=(16, 32)), (3, 333, 201), 0.01, (16, 32)),
    (masks.UniformRandom2DMask(4, calib=24), (320, 368), 0.01, (24, 24)),
    (masks.UniformRandom2DMask(8, calib=(9, 13)), (33, 333), 0.01, (9, 13)),
    (masks.PoissonDiskMask(4, calib=16), (96, 96), 0.03, (16, 16)),
    (masks.RadialMask(acceleration=4, calib=16), (256, 256), 0.05, (16, 16)),
    (masks.RadialMask(acceleration=8, golden_angle=False, calib=(8, 12)), (320, 368), 0.05, (8, 12)),
]
IDS = [f"{m.name}-{shape}" for m, shape, *_ in VARIABLE_DENSITY]


@pytest.mark.parametrize("mask_fn, shape, tol, calib", VARIABLE_DENSITY, ids=IDS)
def test_variable_density_mask(mask_fn, shape, tol, calib):
    mask = mask_fn(shape, seed=0)
    h, w = calib
    expected_shape = (1, shape[-1]) if h == 1 else tuple(shape[-2:])
    assert mask.dtype == torch.float32 and tuple(mask.shape) == expected_shape
    assert set(mask.unique().tolist()) <= {0.0, 1.0}

    actual = masks.acceleration(mask, shape)
    assert abs(actual - mask_fn.acceleration) <= tol * mask_fn.acceleration, actual

    box = mask.expand(shape[-2:])[masks._centered(shape[-2], shape[-2] if h == 1 else h), masks._centered(shape[-1], w)]
    assert bool(box.all()), "calibration region not fully sampled"
    size = masks.calibration_size(mask)
    if h == 1:
        assert size[0] >= w
    else:
        assert size[0] * size[1] >= h * w

    assert torch.equal(mask, mask_fn(shape, seed=0))
    assert not torch.equal(mask, mask_fn(shape, seed=1))


def test_variable_density_stream_semantics():
    shape = (128, 128)
    a, fresh = masks.UniformRandom2DMask(4, seed=3), masks.UniformRandom2DMask(4, seed=3)
    a(shape, seed=9)
    assert torch.equal(a(shape), fresh(shape))
    assert not torch.equal(a(shape), a(shape))


def test_poisson_matches_sigpy():
    sigpy_mri = pytest.importorskip("sigpy.mri")
    ours = masks.PoissonDiskMask(4, calib=16)((96, 96), seed=5)
    ref = sigpy_mri.poisson((96, 96), 4, calib=(16, 16), seed=5, dtype=np.float32)
    assert torch.equal(ours, torch.from_numpy(ref))


def test_gaussian_density_is_centred():
    mask = masks.Gaussian1DMask(8, center_fraction=0.04, std_fraction=0.1)((640, 1000), seed=0)[0]
    assert mask[375:625].sum() > 2 * (mask[:250].sum() + mask[750:].sum())


def test_radial_spokes():
    mask = masks.RadialMask(n_spokes=1)((64, 64), seed=0)
    assert mask[32, 32] == 1 and mask.shape == (64, 64)
    assert 60 <= mask.sum() <= 2 * 64 * 2**0.5
    more = masks.RadialMask(n_spokes=20)((64, 64), seed=0)
    assert bool((more >= mask).all())  # golden-angle spoke sets are nested, same rotation for the same seed


# --------------------------------------------------------------------------- reporting


def test_acceleration_and_calibration_size():
    line = torch.zeros(1, 10)
    line[0, [0, 4, 5, 6, 8]] = 1
    assert masks.acceleration(line) == 2.0
    assert masks.acceleration(line, (3, 7, 10)) == 2.0
    assert masks.calibration_size(line) == (3,)
    line[0, 5] = 0
    assert masks.calibration_size(line) == (0,)

    square = torch.zeros(8, 8)
    square[2:7, 3:6] = 1  # centred box of 5 x 3 around (4, 4)
    square[0, 0] = 1
    assert masks.acceleration(square) == 64 / 16
    assert masks.calibration_size(square) == (5, 3)
    assert masks.calibration_size(torch.ones(5, 6)) == (5, 6)
    assert masks.calibration_size(torch.zeros(5, 6)) == (0, 0)
    assert masks.acceleration(torch.zeros(1, 4)) == float("inf")


# --------------------------------------------------------------------------- registry


def test_registry():
    assert set(masks.available()) >= {
        "random", "equispaced", "equispaced_fraction", "magic", "gaussian1d", "gaussian2d", "uniform2d", "poisson", "radial",
    }
    for name in masks.available():
        assert masks.get(name, **({"center_fractions": [0.08], "accelerations": [4]} if name in FASTMRI
                                  else {"n_spokes": 8} if name == "radial" else {"acceleration": 4})).name == name
    fn = masks.get("random", acceleration=4, center_fraction=0.08, seed=1)
    assert torch.equal(fn((320, 368), seed=2), masks.RandomMask([0.08], [4])((320, 368), seed=2))
    with pytest.raises(ValueError, match="known masks: .*random"):
        masks.get("spiral")


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("make, match", [
    (lambda: masks.RandomMask([0.0], [4]), r"center fraction must be in \(0, 1\).*got 0.0"),
    (lambda: masks.RandomMask([1.5], [4]), r"center fraction must be in \(0, 1\).*got 1.5"),
    (lambda: masks.EquispacedMask([0.08], [0.5]), r"acceleration must be .*>= 1.*got 0.5"),
    (lambda: masks.MagicMask([0.08], [2.5]), r"integer.*got 2.5"),
    (lambda: masks.RandomMask([0.08, 0.04], [4]), r"2 center fractions and 1 accelerations"),
    (lambda: masks.RandomMask([0.08], [4])((368,)), r"at least 2 dimensions"),
    (lambda: masks.EquispacedFractionMask([0.3], [4])((320, 368)), r"center.*no outer lines"),
    (lambda: masks.Gaussian1DMask(0.5), r"acceleration must be .*>= 1.*got 0.5"),
    (lambda: masks.Gaussian1DMask(4, center_fraction=1.5), r"center fraction must be in \(0, 1\)"),
    (lambda: masks.Gaussian1DMask(4, center_fraction=0.5)((64, 64)), r"center of 32 columns exceeds"),
    (lambda: masks.Gaussian2DMask(4)((64,)), r"at least 2 dimensions"),
    (lambda: masks.UniformRandom2DMask(4, calib=40)((32, 32)), r"calib \(40, 40\) does not fit"),
    (lambda: masks.UniformRandom2DMask(8, calib=30)((64, 64)), r"calib .* holds more than"),
    (lambda: masks.PoissonDiskMask(1), r"acceleration must be .*> 1"),
    (lambda: masks.RadialMask(), r"exactly one of n_spokes and acceleration"),
    (lambda: masks.get("random", acceleration=4, accelerations=[4], center_fraction=0.08), r"not both"),
    (lambda: masks.get("nope"), r"unknown mask 'nope'"),
    (lambda: masks.RandomMask([0.08], [float("inf")]), r"acceleration must be a finite number"),
    (lambda: masks.RandomMask([float("nan")], [4]), r"center fraction must be in \(0, 1\).*got nan"),
    (lambda: masks.Gaussian2DMask(4, calib=2.5), r"calib must be an int"),
    (lambda: masks.get("random", acceleration=4), r"needs the parameter\(s\) center_fractions"),
    (lambda: masks.get("random", acceleration=4, center_fraction=0.08, sede=1), r"did you mean 'seed'"),
])
def test_bad_inputs(make, match):
    with pytest.raises(ValueError, match=match):
        make()
