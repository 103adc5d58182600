"""Anatomical CT training slices (recon.data.ct_anatomy) and the ``ct-anatomy`` training sources."""
import pytest
import torch

from recon.data import ct_anatomy, phantoms, sources


def _g(seed):
    return torch.Generator().manual_seed(seed)


def test_deterministic_under_a_seed():
    a = ct_anatomy.ct_anatomy(2, 48, _g(3))
    assert torch.equal(a, ct_anatomy.ct_anatomy(2, 48, _g(3)))
    assert not torch.equal(a, ct_anatomy.ct_anatomy(2, 48, _g(4)))


def test_shapes_units_and_hu_range():
    x = ct_anatomy.ct_anatomy(4, 48, _g(0))
    assert x.shape == (4, 48, 48) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert x.min() >= ct_anatomy.HU_MIN and x.max() <= ct_anatomy.HU_MAX
    air = (x < -900).float().mean((1, 2))
    assert (air > 0.05).all()                      # air around the patient
    soft = ((x > -150) & (x < 100)).float().mean((1, 2))
    assert (soft > 0.05).all()                     # fat and soft tissue in every slice


def test_head_and_body_differ():
    head = ct_anatomy.ct_anatomy(6, 64, _g(1), region="head", metal=0.0)
    body = ct_anatomy.ct_anatomy(6, 64, _g(1), region="body", metal=0.0)
    bone = lambda x: (x > 800).float().mean()  # noqa: E731
    fat = lambda x: ((x > -150) & (x < -60)).float().mean()  # noqa: E731
    assert bone(head) > 3 * bone(body)             # the skull
    assert fat(body) > 3 * fat(head)               # subcutaneous and visceral fat
    assert ((head > 800).flatten(1).any(1)).all()  # every head slice has a skull


def test_implants_when_asked():
    with_metal = ct_anatomy.ct_anatomy(8, 128, _g(2), region="body", metal=1.0)
    without = ct_anatomy.ct_anatomy(8, 128, _g(2), region="body", metal=0.0)
    assert (without.amax((1, 2)) < 2000).all()
    assert int((with_metal.amax((1, 2)) > 2000).sum()) >= 4


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="region"):
        ct_anatomy.ct_anatomy(1, 32, _g(0), region="knee")
    with pytest.raises(ValueError, match="metal"):
        ct_anatomy.ct_anatomy(1, 32, _g(0), metal=2.0)
    with pytest.raises(ValueError, match="Generator"):
        ct_anatomy.ct_anatomy(1, 32)


def test_training_sources_scale_like_the_phantom_source():
    src = sources.open_source("ct-anatomy", 32)
    assert not src.is_complex and src.normalization.kind == "fixed" and src.normalization.value == 2.0
    x = src.batch(3, _g(0))
    assert x.shape == (3, 32, 32) and -0.02 <= float(x.min()) and float(x.max()) <= 2.04
    mix = sources.open_source("ct-anatomy+phantoms", 32)
    assert mix.phantom_fraction == 0.25 and mix.batch(4, _g(0)).shape == (4, 32, 32)
    g = _g(5)
    k = sources.AnatomySource(32, phantom_fraction=1.0).batch(2, g)
    assert torch.allclose(k, phantoms.hu_to_mu(phantoms.ct_phantom(2, 32, _g(5))) / 2.0)
    with pytest.raises(ValueError, match="phantom_fraction"):
        sources.AnatomySource(32, phantom_fraction=1.5)


def test_magnified_crops_leave_no_room_for_air_and_keep_the_old_stream_when_off():
    usual = ct_anatomy.ct_anatomy(6, 64, _g(5), region="body")
    assert torch.equal(usual, ct_anatomy.ct_anatomy(6, 64, _g(5), region="body", crops=0.0))   # unchanged stream
    crops = ct_anatomy.ct_anatomy(6, 64, _g(5), region="body", crops=1.0)
    air = lambda x: (x < -900).float().mean((1, 2))  # noqa: E731
    assert float(air(crops).mean()) < 0.6 * float(air(usual).mean())   # the patient fills more of the image
    assert crops.min() >= ct_anatomy.HU_MIN and crops.max() <= ct_anatomy.HU_MAX
    with pytest.raises(ValueError, match="crops"):
        ct_anatomy.ct_anatomy(1, 32, _g(0), crops=1.5)
    with pytest.raises(ValueError, match="crops"):
        sources.AnatomySource(32, crops=-0.1)
    src = sources.open_source("ct-anatomy-crops+phantoms", 32)
    assert src.crops == 0.3 and src.phantom_fraction == 0.25 and src.batch(4, _g(0)).shape == (4, 32, 32)


def test_crop_zoom_range_and_native_source():
    """Finer crops (smaller crop_zoom) show a smaller part of the patient, so fewer edges cross the image."""
    coarse = ct_anatomy.ct_anatomy(6, 64, _g(3), region="head", crops=1.0, crop_zoom=(0.7, 0.8))
    fine = ct_anatomy.ct_anatomy(6, 64, _g(3), region="head", crops=1.0, crop_zoom=(0.15, 0.2))
    grad = lambda x: (x[:, 1:, :] - x[:, :-1, :]).abs().mean()  # noqa: E731
    assert float(grad(fine)) < float(grad(coarse))
    # the default range draws exactly what it drew before the option existed
    assert torch.equal(ct_anatomy.ct_anatomy(3, 32, _g(1), crops=0.5),
                       ct_anatomy.ct_anatomy(3, 32, _g(1), crops=0.5, crop_zoom=ct_anatomy.CROP_ZOOM))
    for bad in ((0.01, 0.5), (0.6, 0.5), (0.5, 1.5)):
        with pytest.raises(ValueError, match="crop_zoom"):
            ct_anatomy.ct_anatomy(1, 32, _g(0), crops=1.0, crop_zoom=bad)
    src = sources.open_source("ct-anatomy-native+phantoms", 32)
    assert src.crops == 0.6 and src.crop_zoom == sources.NATIVE_CROP_ZOOM and src.crop_zoom[0] < 0.25
    assert src.batch(4, _g(0)).shape == (4, 32, 32)
