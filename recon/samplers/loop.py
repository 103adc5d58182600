"""The reverse-diffusion loops (in the style of k-diffusion's samplers): one core and the two loops built on it.

    x, info = run(x, sigmas, step, name="dds", callback=cb, bar=bar)

``run`` is the core every sampler and task shares. For each consecutive pair (sigma_i, sigma_{i+1}) of the
schedule, ``step(x, sigma_i, sigma_{i+1}, i)`` returns the next iterate and a dict holding at least ``denoised``
(the step's Tweedie estimate, after data consistency where the sampler has it). The loop checks the iterate for
NaN/Inf, calls ``callback({"i", "sigma", "sigma_next", "x", "denoised", ...})`` with the iterate the step started
from, and advances the progress bar. A schedule that ends in 0 makes the last step return the clean estimate; a
schedule may also increase (DDIM inversion). Returns the last iterate and the last step's dict.

``ddim`` is the one DDIM loop (DDS, unconditional DDIM, SDEdit, the cascade's refinement, DDIM inversion): at
each step x0 = D(x, sigma) (the prior's Tweedie denoiser), x0' = dc(x0, sigma) with a bound data-consistency step
(``dc``; none for unconditional sampling), then the DDIM update of ``steps.ddim_update`` (Song, Meng & Ermon,
ICLR 2021),

    x' = x0' + sqrt(sigma'^2 - s~^2) eps + s~ z,    eps = (x - x0) / sigma,

with stochasticity eta (s~ = eta sigma' sqrt(sigma^2 - sigma'^2) / sigma; ``convention="dds"``: s~ = eta sigma').
eta = 0 is the probability-flow ODE's Euler step, which runs backwards on an increasing schedule (inversion);
``refine`` > 0 then solves the implicit step x' = x + (sigma' - sigma) eps(x', sigma') by that many fixed-point
iterations from the explicit one (Pan et al., ICCV 2023), which inverts each generating step exactly.

``predictor_corrector`` is the one predictor-corrector loop (Score-MRI, Score-SDE, unconditional PC; Song et
al., ICLR 2021) on ``PCLevels``: per step i a reverse-diffusion predictor (Euler-Maruyama of the reverse VE SDE,
``steps.reverse_diffusion``) with the network at ``net[i]`` moving from ``hi[i]`` to ``lo[i]``,

    x' = x + (hi^2 - lo^2) s(x, net) + sqrt(hi^2 - lo^2) z,

and ``n_corrector`` Langevin corrector steps at ``corr[i]`` (``steps.langevin``: eps = 2 (snr ||z|| / ||s||)^2,
x' = x + eps s + sqrt(2 eps) z), the corrector after the predictor ("predictor-first") or before it
("corrector-first"). A bound data-consistency step acts after every update, on the iterate and on its noise-free
mean (Score-MRI: x <- dc(x), chapter 7 Alg. 7.1), or with ``dc_before`` on the iterate an update starts from at
that update's level (Score-SDE's noised projection). ``denoise_last``: a step that ends at 0 returns the
prior's Tweedie estimate instead. The step's dict holds ``denoised`` (the predictor's x + net^2 s) and ``mean``.
Score-ALD, DPS and Heun write their own step on ``run``: a Langevin ladder with the likelihood gradient inside
the step, a gradient through the network, and a second-order ODE step fit neither loop.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import torch

from .base import check_finite, noise_like
from .steps import ddim_update, langevin, reverse_diffusion

ORDERS = ("corrector-first", "predictor-first")


def run(x: torch.Tensor, sigmas: Sequence[float], step: Callable, name: str, callback: Optional[Callable] = None,
        bar=None):
    sig = [float(s) for s in sigmas]
    if len(sig) < 2:
        raise ValueError(f"{name}: a schedule needs at least 2 noise levels, got {len(sig)}")
    info: dict = {}
    for i in range(len(sig) - 1):
        s, sn = sig[i], sig[i + 1]
        x_next, info = step(x, s, sn, i)
        check_finite(x_next, i, s, name)
        if callback is not None:
            callback({"i": i, "sigma": s, "sigma_next": sn, "x": x, **info})
        if bar is not None:
            bar.update(1)
        x = x_next
    return x, info


# --- DDIM -----------------------------------------------------------------------------------------------------

def ddim_step(denoise: Callable, eta: float, generator: Optional[torch.Generator],
              dc: Optional[Callable] = None, convention: str = "ddim") -> Callable:
    """A DDIM step: x0 = denoise(x, sigma); x0' = dc(x0, sigma) (if given); x' = DDIM(x0', eps = (x - x0) / sigma).
    Noise is drawn from ``generator`` only where the step injects some (eta > 0, sigma' > 0)."""
    def step(x, s, sn, i):
        x0 = denoise(x, s)
        x0c = x0 if dc is None else dc(x0, s)
        z = noise_like(x, generator) if eta > 0 and sn > 0 else None
        return ddim_update(x0c, (x - x0) / s, s, sn, eta, z, convention), {"denoised": x0c}
    return step


def ddim(x: torch.Tensor, sigmas: Sequence[float], denoise: Callable, *, eta: float = 0.0,
         generator: Optional[torch.Generator] = None, dc: Optional[Callable] = None, convention: str = "ddim",
         refine: int = 0, name: str = "ddim", callback: Optional[Callable] = None, bar=None):
    """The DDIM loop over ``sigmas`` from the iterate ``x`` (module docstring); returns (x, the last step's dict)."""
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine must be an integer >= 0, got {refine!r}")
    if refine and (eta > 0 or dc is not None):
        raise ValueError("refine solves the deterministic step implicitly: it needs eta = 0 and no data consistency")
    step = ddim_step(denoise, eta, generator, dc, convention)
    if refine:
        explicit = step

        def step(x, s, sn, i):
            nxt, info = explicit(x, s, sn, i)
            for _ in range(refine):
                nxt = x + (sn - s) * (nxt - denoise(nxt, sn)) / sn
            return nxt, info
    return run(x, sigmas, step, name, callback, bar)


# --- predictor-corrector --------------------------------------------------------------------------------------

class PCLevels(NamedTuple):
    """Per step i: the predictor's network level ``net[i]``, the pair it moves between (``hi[i]`` -> ``lo[i]``),
    the corrector's level ``corr[i]``; and the ``schedule`` the loop reports (one more level than steps)."""

    net: list
    hi: list
    lo: list
    corr: list
    schedule: list


def pc_levels(sigmas: Sequence[float], order: str = "predictor-first") -> PCLevels:
    """The levels of a plain ladder: the predictor moves from each level to the next with the network at the
    first; the corrector runs at the level the iterate is at (the next one predictor-first, this one
    corrector-first)."""
    sig = [float(s) for s in sigmas]
    corr = sig[1:] if order == "predictor-first" else sig[:-1]
    return PCLevels(sig[:-1], sig[:-1], sig[1:], corr, sig)


def predictor_corrector(x: torch.Tensor, levels: PCLevels, prior, generator: torch.Generator, *, snr: float,
                        n_corrector: int = 1, order: str = "predictor-first", dc: Optional[Callable] = None,
                        dc_before: bool = False, split_complex: bool = False, denoise_last: bool = False,
                        after: Optional[Callable] = None, name: str = "pc", callback: Optional[Callable] = None,
                        bar=None):
    """The predictor-corrector loop from the iterate ``x`` (module docstring). ``split_complex``: Langevin step
    sizes for Re and Im apart (a magnitude prior on a complex image). ``after(x, mean, i) -> (x, mean)`` is run at
    the end of each step (Score-MRI's hybrid SENSE step). Returns (x, the last step's dict)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    net, hi, lo, corr = levels.net, levels.hi, levels.lo, levels.corr
    pre = dc if dc_before else None
    post = None if dc_before else dc

    def predictor(x, i):
        if pre is not None:
            x = pre(x, hi[i])
        score = prior.score(x, net[i])
        den = x + net[i] * net[i] * score  # Tweedie: D(x) = x + sigma^2 score
        x, mean = reverse_diffusion(x, score, hi[i], lo[i], noise_like(x, generator))
        if post is not None:
            x, mean = post(x, lo[i]), post(mean, lo[i])
        return x, mean, den

    def corrector(x, mean, i):
        for _ in range(n_corrector):
            if pre is not None:
                x = pre(x, corr[i])
            x, mean = langevin(x, prior.score(x, corr[i]), snr, noise_like(x, generator), split_complex=split_complex)
            if post is not None:
                x, mean = post(x, corr[i]), post(mean, corr[i])
        return x, mean

    def step(x, s, sn, i):
        if denoise_last and lo[i] == 0:
            den = prior.denoise(x, hi[i])
            return den, {"denoised": den, "mean": den}
        if order == "corrector-first":
            x, _ = corrector(x, x, i)
            x, mean, den = predictor(x, i)
        else:
            x, mean, den = predictor(x, i)
            x, mean = corrector(x, mean, i)
        if after is not None:
            x, mean = after(x, mean, i)
        return x, {"denoised": den, "mean": mean}

    return run(x, levels.schedule, step, name, callback, bar)
