"""Domain-randomised MNI152 synthesis (recon.data.synth) and the ``mni152-synth`` training source."""
import pytest
import torch

pytest.importorskip("nilearn")
pytest.importorskip("scipy")

from recon.data import brain, sources, synth  # noqa: E402


@pytest.fixture(scope="module")
def source():
    return sources.open_source("mni152-synth", 64)


def test_batch_shapes_dtype_and_normalisation(source):
    x = source.batch(6, torch.Generator().manual_seed(0))
    assert x.shape == (6, 64, 64) and x.dtype == torch.complex64 and torch.isfinite(torch.view_as_real(x)).all()
    assert source.is_complex and source.normalization.kind == "percentile" and source.normalization.q == 99.0
    q = torch.quantile(x[3:].abs().reshape(3, -1), 0.99, dim=1)   # the synthetic half
    assert torch.allclose(q, torch.ones(3), atol=1e-3)


def test_deterministic_given_the_generator(source):
    a = source.batch(4, torch.Generator().manual_seed(5))
    b = source.batch(4, torch.Generator().manual_seed(5))
    c = source.batch(4, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_heldout_slab_excluded():
    train, held = brain.split_indices("train"), brain.split_indices("heldout")
    assert len(synth.tissue_maps("train")) == len(train) and not set(train) & set(held)
    lo, hi = brain.HELDOUT
    assert all(z < lo - brain.GAP or z >= hi + brain.GAP for z in train)
    assert synth.tissue_maps("heldout").shape == (len(held), 4, 196, 196)


def test_intensity_orderings_vary():
    c, kinds = synth.draw_intensities(200, torch.Generator().manual_seed(0))
    assert set(kinds) == set(synth.KINDS)
    orders = {tuple(torch.argsort(row[:3]).tolist()) for row in c}   # ordering of gm, wm, csf
    assert len(orders) >= 4
    t1 = c[[k == "t1" for k in kinds]]
    t2 = c[[k == "t2" for k in kinds]]
    assert (t1[:, 1] > t1[:, 2]).all() and (t2[:, 2] > t2[:, 1]).all()   # wm > csf in T1, csf > wm in T2
    with pytest.raises(ValueError, match="kind"):
        synth.draw_intensities(1, torch.Generator(), "ct")


def test_zoom_changes_the_field_of_view():
    maps = synth.tissue_maps("heldout")[:1]
    c = torch.tensor([[0.65, 0.95, 0.15, 0.5]])
    small, large = (synth.render(maps, c, torch.tensor([p]), 128) for p in (0.6, 2.0))
    frac = [(m > 0.05 * m.max()).float().mean().item() for m in (small, large)]
    assert frac[0] > 0.9 > 0.5 > frac[1]      # 0.6 mm: a crop inside the head; 2 mm: the whole head with margin


def test_resolution_randomisation_blurs_and_the_res_source_uses_it():
    maps = synth.tissue_maps("heldout")[:4]

    def roughness(x):
        m = x.abs()
        return float((m[:, 1:] - m[:, :-1]).abs().mean() / m.mean())

    sharp = synth.synthesize(maps, torch.Generator().manual_seed(1), 64, max_noise=0.0)
    blurred = synth.synthesize(maps, torch.Generator().manual_seed(1), 64, max_noise=0.0, max_blur=4.0,
                               blur_fraction=1.0)
    assert roughness(blurred) < 0.85 * roughness(sharp)
    res = sources.open_source("mni152-synth-res", 64)
    assert (res.max_blur, res.max_noise) == (1.5, 0.04)
    x = res.batch(4, torch.Generator().manual_seed(0))
    assert x.shape == (4, 64, 64) and torch.isfinite(torch.view_as_real(x)).all()
