"""Samplers own their defaults: ``for_problem`` builds, from what the operator contract answers, exactly the
samplers the MRI and CT commands built with their own ``sampler_for`` (copied below as the expected behaviour);
the contract answers what that needs (``sampling``, ``angular_coverage``, ``n_views``) through the algebra."""
import math
from typing import Optional

import pytest
import torch

from operators import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI, trajectories
from operators.ct import FanBeamCT, ParallelBeamCT, angles
from operators.image import Downsample, Inpainting
from operators.linop import Linop
from recon import samplers
from recon.priors.gaussian import GaussianDenoiser
from recon.priors.prior import DiffusionPrior

DDS_TV = samplers.dds.TV_XY


# --- the commands' policy before it moved into the samplers (the expected behaviour) ---------------------------

def old_dds_noise(text) -> dict:
    t = str(text).strip().lower()
    if t == "auto":
        return {}
    if t == "none":
        return {"sigma_y": None, "cg_iter": 5}
    return {"sigma_y": float(t)}


def old_mri_sampler_for(method, preset=None, steps=None, noise_std="auto", dds_tv=None):
    kw = {"steps": steps} if steps else {}
    if method == "score-ald" and steps:
        kw = {"n_levels": steps}
    if method == "dds":
        kw.update(old_dds_noise(noise_std))
        if dds_tv is not None:
            kw["tv_xy"] = float(dds_tv)
    return samplers.get(method, preset=preset, **kw)


def old_coverage(op) -> float:
    period = 360.0 if isinstance(op, FanBeamCT) else 180.0
    th = torch.sort(torch.remainder(torch.rad2deg(op.angles.double()), period)).values
    if len(th) < 2:
        return 0.0
    gaps = torch.diff(torch.cat([th, th[:1] + period]))
    return float(period - gaps.max() + gaps.median())


def old_dds_steps(op) -> int:
    if old_coverage(op) < 170.0:
        return 200
    ratio = 30 / 128 * max(op.ishape[-2:]) / max(1, len(op.angles))
    return int(min(200, max(50, round(50 * ratio))))


def old_ct_sampler_for(method, op, preset=None, steps=None, sigma_y: Optional[float] = None, tv_z=0.0,
                       dds_tv=DDS_TV):
    n = steps
    if preset is not None:
        length = {} if n is None else {"n_levels" if method == "score-ald" else "steps": n}
        return samplers.get(method, preset=preset, **length)
    if method == "dds":
        n = n or old_dds_steps(op)
        if tv_z > 0:
            return samplers.DDS(steps=n, tv_z=tv_z, sigma_y=None)
        if sigma_y:
            return samplers.DDS(steps=n, sigma_y=sigma_y, tv_xy=dds_tv)
        return samplers.DDS(steps=n, tv_xy=dds_tv, sigma_y=None)
    if method == "dps":
        return samplers.DPS(steps=n or 250, zeta=1.0)
    if method == "score-ald":
        return samplers.ScoreALD(sigma_start=2.0, sigma_end=0.01, n_levels=n or 150, steps_each=3,
                                 step_lr=1e-4, denoise_last=True)
    return samplers.ScoreSDE(steps=n or 300, inverse="cg", cg_iter=10)


# --- the calls that replace them -------------------------------------------------------------------------------

def mri_for_problem(method, A, prior, preset=None, steps=None, noise_std="auto", dds_tv=None):
    kw = {}
    if method == "dds":
        kw.update(old_dds_noise(noise_std))  # the option's text -> sigma_y (the command's parsing)
        if dds_tv is not None:
            kw["tv_xy"] = float(dds_tv)
    return samplers.for_problem(method, A, prior, preset=preset, steps=steps, **kw)


def ct_for_problem(method, A, prior, preset=None, steps=None, sigma_y=None, tv_z=0.0, dds_tv=DDS_TV):
    kw = {"sigma_y": sigma_y, "tv_xy": dds_tv, "tv_z": tv_z} if method == "dds" and preset is None else {}
    return samplers.for_problem(method, A, prior, preset=preset, steps=steps, **kw)


def _prior(channels="complex"):
    """A small Gaussian prior (the built-in samplers take their defaults from the operator alone)."""
    mu = torch.zeros((2, 4, 4) if channels == "complex" else (4, 4), dtype=torch.float64)
    return DiffusionPrior(GaussianDenoiser(mu, torch.eye(mu.numel(), dtype=torch.float64)), channels=channels)


MRI_OPERATORS = {
    "single-coil": lambda: SingleCoilMRI(torch.tensor([[1.0, 0, 1, 1, 0, 1, 0, 1]]), shape=(8, 8)),
    "multi-coil": lambda: MultiCoilMRI(torch.ones(2, 8, 8, dtype=torch.complex64), torch.ones(1, 8)),
    "radial": lambda: NonCartesianMRI(torch.ones(2, 8, 8, dtype=torch.complex64), trajectories.radial(4, 16)),
}


@pytest.mark.parametrize("op", sorted(MRI_OPERATORS))
@pytest.mark.parametrize("method", ["dds", "dps", "score-ald", "score-mri", "score-sde"])
def test_for_problem_builds_the_mri_commands_sampler(op, method):
    A, prior = MRI_OPERATORS[op](), _prior()
    presets = [None] + sorted(samplers.sampler_class(method).PRESETS)
    noises = ["auto", "none", "0.02", "0"] if method == "dds" else ["auto"]
    tvs = [None, 0.0, 1e-4] if method == "dds" else [None]
    n = 0
    for preset in presets:
        for steps in (None, 7):
            for noise in noises:
                for tv in tvs:
                    old = old_mri_sampler_for(method, preset, steps, noise, tv)
                    new = mri_for_problem(method, A, prior, preset, steps, noise, tv)
                    assert type(new) is type(old) and new.settings() == old.settings(), (preset, steps, noise, tv)
                    assert vars(new) == vars(old)  # which defaults were stated, too
                    n += 1
    assert n >= 2


def _ct_operators():
    return {
        "parallel-30": ParallelBeamCT((64, 64), angles(views=30)),
        "parallel-30-on-512": ParallelBeamCT((512, 512), angles(views=30)),
        "parallel-10": ParallelBeamCT((64, 64), angles(views=10)),
        "limited": ParallelBeamCT((64, 64), angles(limited=(0.0, 120.0))),
        "fan": FanBeamCT((64, 64), 24, 200.0, 100.0),
        "fan-short": FanBeamCT((64, 64), torch.deg2rad(torch.arange(0.0, 200.0)), 100.0, 100.0),
    }


@pytest.mark.parametrize("method", ["dds", "dps", "score-ald", "score-sde"])
def test_for_problem_builds_the_ct_commands_sampler(method):
    prior = _prior("real")
    presets = [None] + sorted(samplers.sampler_class(method).PRESETS)
    for name, A in _ct_operators().items():
        for op in (A, 3.0 * A.normalized()):  # the contract survives the algebra
            for preset in presets:
                for steps in (None, 12):
                    for sigma_y in (None, 0.1):
                        for tv_z in ((0.0, 1e-4) if method == "dds" else (0.0,)):
                            for tv in ((DDS_TV, 0.0) if method == "dds" else (DDS_TV,)):
                                old = old_ct_sampler_for(method, A, preset, steps, sigma_y, tv_z, tv)
                                new = ct_for_problem(method, op, prior, preset, steps, sigma_y, tv_z, tv)
                                assert type(new) is type(old)
                                assert new.settings() == old.settings(), (name, preset, steps, sigma_y, tv_z, tv)
                                assert vars(new) == vars(old)


def test_dds_steps_follow_the_views_of_projection_data():
    ops = _ct_operators()
    assert samplers.DDS.steps_for(ops["parallel-30"]) == samplers.dds.STEPS == 50
    assert samplers.DDS.steps_for(ParallelBeamCT((256, 256), angles(views=30))) == 100
    assert samplers.DDS.steps_for(ops["parallel-30-on-512"]) == samplers.dds.STEPS_SPARSE_MAX == 200
    assert samplers.DDS.steps_for(ops["parallel-10"]) == 75
    assert samplers.DDS.steps_for(ops["limited"]) == samplers.dds.STEPS_LIMITED == 200
    assert samplers.DDS.steps_for(ops["fan-short"]) == 50
    for A in MRI_OPERATORS.values():
        assert samplers.DDS.steps_for(A()) is None
        assert samplers.for_problem("dds", A(), None).steps == samplers.DDS().steps


def test_the_contract_answers_what_is_measured_through_the_algebra():
    ct = ParallelBeamCT((32, 32), angles(views=7))
    lim = ParallelBeamCT((32, 32), angles(limited=(150.0, 260.0)))  # 150-180 and 0-80 mod 180
    fan = FanBeamCT((32, 32), torch.deg2rad(torch.arange(0.0, 200.0)), 100.0, 100.0)
    assert (ct.sampling, ct.angular_coverage, ct.n_views) == ("projection", pytest.approx(180.0), 7)
    assert lim.angular_coverage == pytest.approx(110.0) and fan.angular_coverage == pytest.approx(200.0)
    shifted = ParallelBeamCT((32, 32), torch.flip(ct.angles, (0,)) + math.pi * 0.9)
    assert shifted.angular_coverage == pytest.approx(180.0)
    assert ParallelBeamCT((32, 32), angles(n=1)).angular_coverage == 0.0
    for A in (ct, lim, fan):
        assert old_coverage(A) == A.angular_coverage
    w = Inpainting(torch.ones(ct.oshape))
    for derived in (2.5 * ct, ct.normalized(), w @ ct, ct @ Downsample((64, 64), 2), ct + ct):
        assert (derived.sampling, derived.angular_coverage, derived.n_views) == \
               ("projection", ct.angular_coverage, 7)
    other = ParallelBeamCT((32, 32), angles(n=7, limited=(0.0, 90.0)))
    assert ((ct + other).sampling, (ct + other).angular_coverage, (ct + other).n_views) == ("projection", None, 7)
    mri = MRI_OPERATORS["multi-coil"]()
    assert mri.sampling == "cartesian" == (2 * mri).sampling == MRI_OPERATORS["single-coil"]().sampling
    assert MRI_OPERATORS["radial"]().normalized().sampling == "non-cartesian"
    for A in (mri, Inpainting(torch.ones(4, 4)), Downsample((8, 8), 2)):
        assert A.angular_coverage is None and A.n_views is None
    assert Inpainting(torch.ones(4, 4)).sampling is None
    assert not hasattr(Linop, "tv_default")  # the TV weight is DDS's, not the operator's


def test_presets_come_first_then_the_stated_settings_then_the_problem():
    lim, prior = _ct_operators()["limited"], _prior("real")
    ref = samplers.for_problem("dds", lim, prior, preset="reference")
    assert ref.settings() == samplers.DDS.from_preset("reference").settings()  # the preset sets the steps
    assert samplers.for_problem("dds", lim, prior).steps == 200                # the problem's default
    assert samplers.for_problem("dds", lim, prior, steps=9).steps == 9         # the stated length
    assert samplers.for_problem("dds", lim, prior, preset="reference", steps=9).steps == 9
    ald = samplers.for_problem("score-ald", lim, prior, step_lr=1e-3)
    assert (ald.step_lr, ald.sigma_start, ald.n_levels, ald.denoise_last) == (1e-3, 2.0, 150, True)
    ald_ref = samplers.for_problem("score-ald", lim, prior, preset="reference", steps=5)
    assert ald_ref.settings() == samplers.ScoreALD.from_preset("reference", n_levels=5).settings()
    assert samplers.for_problem("score-ald", MRI_OPERATORS["multi-coil"](), prior, steps=5).n_levels == 5
    coupled = samplers.for_problem("dds", lim, prior, tv_z=1e-4, sigma_y=0.1, tv_xy=1e-3)
    assert (coupled.tv_z, coupled.sigma_y, coupled.tv_xy) == (1e-4, None, 0.0)
    with pytest.raises(ValueError, match="no preset 'fast'"):
        samplers.for_problem("dds", lim, prior, preset="fast")
    with pytest.raises(TypeError, match="A must be an operator"):
        samplers.for_problem("dds", "not an operator", prior)


def test_a_plugin_sampler_gets_for_problem_from_the_base_class():
    class Plain(samplers.Sampler):
        name = "plain-for-problem"

        def __init__(self, steps=3, **kw):
            super().__init__(**kw)
            self.steps = steps

    s = Plain.for_problem(_ct_operators()["limited"], None, steps=4)
    assert isinstance(s, Plain) and s.steps == 4
    assert Plain.for_problem(None, None).settings() == Plain().settings()
