"""The per-slice reconstructions that the commands, the experiments and the demo share.

- ``mri``: a fastMRI or non-Cartesian file, slice by slice: geometry protocol, mask, ESPIRiT maps, the operator,
  a sampler or a classical method, the crop to the recon matrix and the scores (``reconstruct_slice``,
  ``reconstruct_file``).
- ``ct``: sparse-view and limited-angle CT from a sinogram or an image (``reconstruct``, ``reconstruct_file``).
- ``uncertainty``: posterior samples of one slice, their mean, std and quantile maps, calibrated intervals
  (``uncertainty_file``); ``calibration``: a sampler's intervals calibrated on fully sampled slices
  (``calibrate_files``).
- ``settings``: the settings every reconstruction has (prior, samples, seed, steps, device, preset) and the
  slice selection.

``recon.apps`` turns command-line options into these settings and prints what the pipelines return; the
pipelines never import ``recon.apps``.
"""
