"""``recon info FILE.h5``: what a fastMRI file (or an ISMRMRD/MRD raw file: ``recon.data.mrd.describe``) holds (shape, coils, sizes, reference, mask, header, attributes).

Nothing of the k-space is read, so a file of any declared size is described; the ``memory`` line says what
reconstructing one slice needs against the memory budget (``recon.memory``), which is what the commands that read
a slice check before reading it.
"""
from __future__ import annotations

from recon import memory
from recon.data import load_fastmri, mrd


def describe(path) -> str:
    vol = load_fastmri(path)
    h = vol.header
    need, budget = vol.memory_needed(), memory.budget_bytes()
    mask = f"yes (acceleration {vol.mask.numel() / vol.mask.sum().item():.2f})" if vol.mask is not None else "none"
    lines = [
        f"file:          {vol.path}",
        f"k-space:       {vol.shape[0]} slices x {vol.num_coils} coils x {vol.shape[2]} x {vol.shape[3]} "
        f"({'multi-coil' if vol.is_multicoil else 'single-coil'})",
        f"acquisition:   {vol.attrs.get('acquisition', 'unknown')}",
        f"encoding size: {vol.encoding_size}",
        f"recon size:    {vol.recon_size}",
        f"target:        {vol.target_key if vol.has_target else 'none'}",
        f"mask:          {mask}",
        f"header:        {'ISMRMRD XML' if h is not None else 'none'}",
        f"memory:        {memory.describe(vol.slice_nbytes)} a slice; reconstructing one needs about "
        f"{memory.describe(need)}, {'within' if need <= budget else 'above'} the budget of {memory.describe(budget)}",
    ]
    extra = {k: v for k, v in vol.attrs.items() if k != "acquisition"}
    if extra:
        lines.append(f"attributes:    {extra}")
    return "\n".join(lines)


def command(path) -> int:
    print(mrd.describe(path) if mrd.is_mrd(path) else describe(path))
    return 0
