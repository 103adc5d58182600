"""Simulated ISMRMRD/MRD raw files, written with the ``ismrmrd`` package as a scanner converter writes them.

``simulate_cartesian`` turns images (S, H, W) on the encoded grid (H the readout, oversampled: the object fills the
central H / oversampling rows) and coil maps into a 2-D multi-slice Cartesian acquisition:

    y_c(line, average) = F(S_c x)[:, line] + L z,   L L^H = Psi (the coil noise covariance), z ~ CN(0, I)

one readout per phase-encode line, slice and average, with the ISMRMRD flags and counters a converter sets:
noise readouts (ACQ_IS_NOISE_MEASUREMENT) of covariance Psi (t_data / t_noise) rnbw, the reader's bandwidth model
inverted (``recon.data.prewhiten``); a separate calibration block (ACQ_IS_PARALLEL_CALIBRATION) for the central
lines that ``lines`` leaves out; every other line reversed (ACQ_IS_REVERSE, samples stored x[::-1]); navigator,
phase-correction and dummy-scan readouts of junk (to be skipped); partial Fourier by leaving out the first lines
(encoding limits minimum > 0); positions and directions per slice. ``simulate_noncartesian`` writes readouts along
a trajectory (cycles per field of view) the same way. Both return what was simulated, for tests and experiments.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import ismrmrd
import numpy as np
import torch
from ismrmrd import constants as K
from ismrmrd import xsd

from operators.fft import fft2c
from recon.atomic import atomic_path


@dataclass
class Geometry:
    """Where the simulated slices are: ``fov`` (readout, phase) mm of the recon field of view, ``thickness`` mm,
    ``read_dir``, ``phase_dir``, ``slice_dir`` (LPS unit vectors), ``center`` (LPS mm of slice 0) and ``gap`` (mm
    between slice centres)."""
    fov: tuple = (220.0, 220.0)
    thickness: float = 3.0
    read_dir: tuple = (1.0, 0.0, 0.0)
    phase_dir: tuple = (0.0, 1.0, 0.0)
    slice_dir: tuple = (0.0, 0.0, 1.0)
    center: tuple = (0.0, 0.0, 0.0)
    gap: float = 4.0


def header(encoded, recon, encoded_fov, recon_fov, channels: int, limits: dict, trajectory: str = "cartesian",
           noise_bandwidth: Optional[float] = None, info: Optional[dict] = None) -> xsd.ismrmrdHeader:
    """An ISMRMRD header (the ``ismrmrd`` package's schema classes). ``limits``: counter -> (min, max, center)."""
    def space(m, f):
        return xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=m[0], y=m[1], z=m[2]),
                                     fieldOfView_mm=xsd.fieldOfViewMm(x=f[0], y=f[1], z=f[2]))
    lim = xsd.encodingLimitsType(**{k: xsd.limitType(minimum=v[0], maximum=v[1], center=v[2])
                                    for k, v in limits.items()})
    enc = xsd.encodingType(encodedSpace=space(encoded, encoded_fov), reconSpace=space(recon, recon_fov),
                           encodingLimits=lim, trajectory=xsd.trajectoryType(trajectory))
    info = info or {}
    h = xsd.ismrmrdHeader(experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63500000),
                          encoding=[enc])
    h.acquisitionSystemInformation = xsd.acquisitionSystemInformationType(
        receiverChannels=channels, relativeReceiverNoiseBandwidth=noise_bandwidth,
        systemVendor="diffrecon simulation", systemFieldStrength_T=1.5)
    h.subjectInformation = xsd.subjectInformationType(patientName=info.get("patientName", "Phantom^Simulated"),
                                                      patientID=info.get("patientID", "SIM0001"))
    h.studyInformation = xsd.studyInformationType(studyDescription=info.get("studyDescription", "simulation"))
    h.measurementInformation = xsd.measurementInformationType(
        patientPosition=xsd.patientPositionType("HFS"), protocolName=info.get("protocolName", "SIM_T2"),
        seriesDescription=info.get("seriesDescription", "simulated acquisition"))
    h.sequenceParameters = xsd.sequenceParametersType(TR=[2500.0], TE=[90.0], flipAngle_deg=[90.0])
    return h


def acquisition(data: np.ndarray, flags=(), traj: Optional[np.ndarray] = None, **fields) -> ismrmrd.Acquisition:
    """One readout (``ismrmrd.Acquisition``): samples (C, N), flags (ismrmrd.constants ACQ_*), trajectory (N, D),
    and header fields by name (encoding counters such as ``kspace_encode_step_1`` go into ``idx``)."""
    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, dtype=np.complex64),
                                         None if traj is None else np.ascontiguousarray(traj, dtype=np.float32))
    for f in flags:
        acq.set_flag(f)
    for name, value in fields.items():
        if name in ("position", "read_dir", "phase_dir", "slice_dir"):
            for a in range(3):
                getattr(acq, name)[a] = float(value[a])
        elif name in ("kspace_encode_step_1", "kspace_encode_step_2", "average", "slice", "contrast", "phase",
                      "repetition", "set", "segment"):
            setattr(acq.idx, name, int(value))
        else:
            setattr(acq, name, value)
    return acq


def write(path, hdr: xsd.ismrmrdHeader, acquisitions: list) -> Path:
    """Write the header and the acquisitions as ``/dataset`` of an MRD file (``ismrmrd.File``), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        f = ismrmrd.File(str(tmp), "w")
        try:
            f["dataset"].header = hdr
            f["dataset"].acquisitions = acquisitions
        finally:
            f.close()
    return path


def correlated_noise(shape, covariance: np.ndarray, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Complex Gaussian noise (..., C, N) whose channels have covariance ``scale**2 * covariance``."""
    lower = np.linalg.cholesky(covariance)
    z = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    return scale * np.einsum("ij,...jn->...in", lower, z)


def simulate_cartesian(path, images, maps, covariance: np.ndarray, *, oversampling: int = 2,
                       lines: Optional[np.ndarray] = None, calibration: int = 0, averages: int = 1,
                       partial_fourier: int = 0, reverse: bool = True, extras: bool = True,
                       noise_readouts: int = 64, noise_dwell_us: float = 5.0, dwell_us: float = 10.0,
                       noise_bandwidth: Optional[float] = None, geometry: Optional[Geometry] = None,
                       seed: int = 0) -> dict:
    """Write a 2-D multi-slice Cartesian MRD file (module docstring) and return the simulation.

    images (S, H, W) complex on the encoded grid; maps (C, H, W) or (S, C, H, W); covariance (C, C) of the data's
    noise per complex sample; ``lines`` (W,) bool: the imaging lines (default all); ``calibration``: the number of
    central lines also written as a separate calibration block; ``partial_fourier``: the number of first lines
    never acquired. Returns {"kspace": (S, C, H, W) noiseless, "mask": (W,) lines holding data, "header": the
    ismrmrd header, "recon": (h, w)}."""
    x = torch.as_tensor(images).to(torch.complex64)
    s = torch.as_tensor(maps).to(torch.complex64)
    k = fft2c(s * x[:, None]).numpy()                                        # (S, C, H, W)
    n_sl, n_c, H, W = k.shape
    geo = geometry or Geometry()
    rng = np.random.default_rng(seed)
    acquired = np.ones(W, bool) if lines is None else np.asarray(lines, bool).copy()
    acquired[:partial_fourier] = False
    cal = np.zeros(W, bool)
    if calibration:
        cal[W // 2 - calibration // 2:W // 2 - calibration // 2 + calibration] = True
    first = int(np.flatnonzero(acquired | cal)[0])
    hdr = header((H, W, 1), (H // oversampling, W, 1), (geo.fov[0] * oversampling, geo.fov[1], geo.thickness),
                 (geo.fov[0], geo.fov[1], geo.thickness), n_c,
                 {"kspace_encoding_step_1": (first, W - 1, W // 2), "slice": (0, n_sl - 1, 0),
                  "average": (0, averages - 1, 0)}, noise_bandwidth=noise_bandwidth)
    common = {"center_sample": H // 2, "read_dir": geo.read_dir, "phase_dir": geo.phase_dir,
              "slice_dir": geo.slice_dir, "sample_time_us": dwell_us, "available_channels": n_c}
    acqs = []
    scale = np.sqrt(dwell_us / noise_dwell_us * (1.0 if noise_bandwidth is None else noise_bandwidth))
    for _ in range(noise_readouts):
        acqs.append(acquisition(correlated_noise((n_c, H), covariance, rng, scale), [K.ACQ_IS_NOISE_MEASUREMENT],
                                 sample_time_us=noise_dwell_us, available_channels=n_c))
    for sl in range(n_sl):
        pos = np.asarray(geo.center) + sl * geo.gap * np.asarray(geo.slice_dir)
        junk = {"position": pos, "slice": sl, **common}
        if extras:
            for flag in (K.ACQ_IS_DUMMYSCAN_DATA, K.ACQ_IS_NAVIGATION_DATA, K.ACQ_IS_PHASECORR_DATA):
                acqs.append(acquisition(1e3 * np.ones((n_c, H)), [flag], kspace_encode_step_1=W // 2, **junk))
        for ky in np.flatnonzero(cal):
            d = k[sl, :, :, ky] + correlated_noise((n_c, H), covariance, rng)
            acqs.append(acquisition(d, [K.ACQ_IS_PARALLEL_CALIBRATION], kspace_encode_step_1=ky, **junk))
        for avg in range(averages):
            for ky in np.flatnonzero(acquired):
                d = k[sl, :, :, ky] + correlated_noise((n_c, H), covariance, rng)
                flags = []
                if reverse and ky % 2:
                    d, flags = d[:, ::-1], [K.ACQ_IS_REVERSE]
                acqs.append(acquisition(d, flags, kspace_encode_step_1=ky, average=avg, **junk))
    write(path, hdr, acqs)
    return {"kspace": k, "mask": acquired | cal, "imaging": acquired, "header": hdr,
            "recon": (H // oversampling, W)}


def simulate_noncartesian(path, samples: np.ndarray, trajectory: np.ndarray, matrix, covariance: np.ndarray, *,
                          kind: str = "radial", noise_readouts: int = 64, averages: int = 1,
                          geometry: Optional[Geometry] = None, seed: int = 0) -> dict:
    """Write noiseless ``samples`` (S, C, R, N) along ``trajectory`` (R, N, 2), cycles per field of view of
    ``matrix`` (H, W), plus correlated noise, as a non-Cartesian MRD file (one readout per spoke, slice and
    average). Returns {"header": ...}."""
    n_sl, n_c, n_r, n = samples.shape
    geo = geometry or Geometry()
    rng = np.random.default_rng(seed)
    hdr = header((*matrix, 1), (*matrix, 1), (geo.fov[0], geo.fov[1], geo.thickness),
                 (geo.fov[0], geo.fov[1], geo.thickness), n_c,
                 {"kspace_encoding_step_1": (0, n_r - 1, 0), "slice": (0, n_sl - 1, 0)}, trajectory=kind)
    acqs = [acquisition(correlated_noise((n_c, n), covariance, rng), [K.ACQ_IS_NOISE_MEASUREMENT],
                         available_channels=n_c) for _ in range(noise_readouts)]
    for sl in range(n_sl):
        pos = np.asarray(geo.center) + sl * geo.gap * np.asarray(geo.slice_dir)
        for avg in range(averages):
            for r in range(n_r):
                d = samples[sl, :, r] + correlated_noise((n_c, n), covariance, rng)
                acqs.append(acquisition(d, traj=trajectory[r], kspace_encode_step_1=r, average=avg, slice=sl,
                                         position=pos, read_dir=geo.read_dir, phase_dir=geo.phase_dir,
                                         slice_dir=geo.slice_dir, center_sample=n // 2, available_channels=n_c))
    write(path, hdr, acqs)
    return {"header": hdr}
