"""The ISMRMRD XML header (``/dataset/xml`` of an MRD file): the fields reconstruction and export need.

The header follows the ISMRMRD schema (ismrmrd.xsd, https://ismrmrd.readthedocs.io; Inati et al., MRM 2017):

    encoding[e]/encodedSpace/matrixSize (x, y, z), fieldOfView_mm   the sampled k-space grid and its field of view:
                                                                     x the readout (oversampled as acquired),
                                                                     y phase encoding, z the 3-D partitions
                                                                     (1 for 2-D; fieldOfView_mm z is then the slab)
    encoding[e]/reconSpace/...                                       the image the scanner would reconstruct
    encoding[e]/encodingLimits/<counter> (minimum, maximum, center)  kspace_encoding_step_1, _2, slice, average, ...
    encoding[e]/trajectory                                           cartesian, epi, radial, goldenangle, spiral, other
    acquisitionSystemInformation/relativeReceiverNoiseBandwidth      the receiver filter's noise bandwidth (noise
                                                                     prewhitening, ``recon.data.prewhiten``)
    subjectInformation, studyInformation, measurementInformation,    patient, study and series identity, patient
    sequenceParameters, experimentalConditions                       position, TR/TE/TI/flip angle, Larmor frequency

The XML is parsed with the standard library rather than the ``ismrmrd`` package's schema binding, whose parser
refuses a whole document for one element it does not know: a reconstruction needs a handful of fields and names
exactly the one that is missing or malformed (``encoding[0]/encodedSpace/matrixSize/y: missing``). Tags are
matched without their namespace, so headers written without the ISMRMRD namespace read as well.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Optional

from .errors import DataError

COUNTERS = ("kspace_encoding_step_0", "kspace_encoding_step_1", "kspace_encoding_step_2", "average", "slice",
            "contrast", "phase", "repetition", "set", "segment")
TRAJECTORIES = ("cartesian", "epi", "radial", "goldenangle", "spiral", "other")


@dataclass(frozen=True)
class Limit:
    """An encoding limit of the header: the counter's minimum, maximum and centre."""
    minimum: int
    maximum: int
    center: int


@dataclass(frozen=True)
class MRDHeader:
    """What the reconstruction and the export read from an ISMRMRD header (module docstring).

    encoded_matrix, recon_matrix: (x, y, z) ints; encoded_fov, recon_fov: (x, y, z) mm or None when absent;
    limits: counter name -> Limit for the limits the header gives; trajectory: one of ``TRAJECTORIES``;
    trajectory_identifier: trajectoryDescription/identifier or None; noise_bandwidth:
    relativeReceiverNoiseBandwidth or None; info: the identity and sequence fields present (strings and numbers,
    keyed by the schema's element names); xml: the document as text."""

    xml: str
    encoding: int
    encoded_matrix: tuple
    recon_matrix: tuple
    encoded_fov: Optional[tuple]
    recon_fov: Optional[tuple]
    limits: dict
    trajectory: str
    trajectory_identifier: Optional[str] = None
    noise_bandwidth: Optional[float] = None
    receiver_channels: Optional[int] = None
    info: dict = field(default_factory=dict)

    def limit(self, counter: str) -> Optional[Limit]:
        return self.limits.get(counter)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> Optional[ET.Element]:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _children(el: ET.Element, name: str) -> list:
    return [c for c in el if _local(c.tag) == name]


def _find(el: Optional[ET.Element], path: str) -> Optional[ET.Element]:
    for name in path.split("/"):
        if el is None:
            return None
        el = _child(el, name)
    return el


def _text(el: Optional[ET.Element], path: str) -> Optional[str]:
    e = _find(el, path)
    if e is None or e.text is None or not e.text.strip():
        return None
    return e.text.strip()


def _number(where: str, text: Optional[str], kind, required: bool, minimum=None):
    if text is None:
        if required:
            raise DataError(f"{where}: missing from the ISMRMRD header; the reconstruction needs it")
        return None
    try:
        v = kind(float(text)) if kind is int and "." in text and float(text).is_integer() else kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise DataError(f"{where} = {text!r} in the ISMRMRD header: expected {expected}") from None
    if kind is float and not math.isfinite(v):
        raise DataError(f"{where} = {text!r} in the ISMRMRD header: expected a finite number")
    if minimum is not None and v < minimum:
        raise DataError(f"{where} = {text} in the ISMRMRD header: expected a value >= {minimum}")
    return v


def _space(enc: ET.Element, prefix: str, space: str, required: bool):
    """(matrix (x, y, z), fov (x, y, z) or None) of encodedSpace / reconSpace."""
    where = f"{prefix}/{space}"
    el = _child(enc, space)
    if el is None:
        if required:
            raise DataError(f"{where}: missing from the ISMRMRD header; the reconstruction needs the matrix size")
        return None, None
    m = _child(el, "matrixSize")
    if m is None:
        raise DataError(f"{where}/matrixSize: missing from the ISMRMRD header; the reconstruction needs it")
    x = _number(f"{where}/matrixSize/x", _text(m, "x"), int, True, 1)
    y = _number(f"{where}/matrixSize/y", _text(m, "y"), int, True, 1)
    z = _number(f"{where}/matrixSize/z", _text(m, "z"), int, False, 0)
    matrix = (x, y, max(1, z if z is not None else 1))
    f = _child(el, "fieldOfView_mm")
    fov = None
    if f is not None:
        vals = [_number(f"{where}/fieldOfView_mm/{a}", _text(f, a), float, False) for a in "xyz"]
        if vals[0] is not None and vals[1] is not None:
            for a, v in zip("xy", vals):
                if v <= 0:
                    raise DataError(f"{where}/fieldOfView_mm/{a} = {v:g} in the ISMRMRD header: expected a field "
                                    f"of view > 0 mm")
            fov = (vals[0], vals[1], vals[2] if vals[2] is not None and vals[2] > 0 else None)
    return matrix, fov


def _limits(enc: ET.Element, prefix: str) -> dict:
    out = {}
    lim = _child(enc, "encodingLimits")
    if lim is None:
        return out
    for name in COUNTERS:
        el = _child(lim, name)
        if el is None:
            continue
        where = f"{prefix}/encodingLimits/{name}"
        lo = _number(f"{where}/minimum", _text(el, "minimum"), int, False, 0)
        hi = _number(f"{where}/maximum", _text(el, "maximum"), int, False, 0)
        c = _number(f"{where}/center", _text(el, "center"), int, False, 0)
        if hi is None:
            continue
        lo = 0 if lo is None else lo
        c = (lo + hi + 1) // 2 if c is None else c
        if lo > hi:
            raise DataError(f"{where}: minimum {lo} > maximum {hi}; expected minimum <= center <= maximum")
        out[name] = Limit(lo, hi, c)
    return out


def _info(root: ET.Element) -> dict:
    """Identity and sequence fields that exist in the header, by their schema names."""
    fields = {
        "patientName": "subjectInformation/patientName", "patientID": "subjectInformation/patientID",
        "patientBirthdate": "subjectInformation/patientBirthdate", "patientGender": "subjectInformation/patientGender",
        "patientWeight_kg": "subjectInformation/patientWeight_kg",
        "studyDate": "studyInformation/studyDate", "studyTime": "studyInformation/studyTime",
        "studyID": "studyInformation/studyID", "accessionNumber": "studyInformation/accessionNumber",
        "studyDescription": "studyInformation/studyDescription",
        "studyInstanceUID": "studyInformation/studyInstanceUID",
        "bodyPartExamined": "studyInformation/bodyPartExamined",
        "referringPhysicianName": "studyInformation/referringPhysicianName",
        "measurementID": "measurementInformation/measurementID",
        "seriesDate": "measurementInformation/seriesDate", "seriesTime": "measurementInformation/seriesTime",
        "patientPosition": "measurementInformation/patientPosition",
        "protocolName": "measurementInformation/protocolName",
        "sequenceName": "measurementInformation/sequenceName",
        "seriesDescription": "measurementInformation/seriesDescription",
        "seriesInstanceUIDRoot": "measurementInformation/seriesInstanceUIDRoot",
        "frameOfReferenceUID": "measurementInformation/frameOfReferenceUID",
        "initialSeriesNumber": "measurementInformation/initialSeriesNumber",
        "systemVendor": "acquisitionSystemInformation/systemVendor",
        "systemModel": "acquisitionSystemInformation/systemModel",
        "systemFieldStrength_T": "acquisitionSystemInformation/systemFieldStrength_T",
        "institutionName": "acquisitionSystemInformation/institutionName",
        "stationName": "acquisitionSystemInformation/stationName",
        "H1resonanceFrequency_Hz": "experimentalConditions/H1resonanceFrequency_Hz",
        "sequence_type": "sequenceParameters/sequence_type",
    }
    out = {k: v for k, p in fields.items() if (v := _text(root, p)) is not None}
    seq = _child(root, "sequenceParameters")
    if seq is not None:
        for name in ("TR", "TE", "TI", "flipAngle_deg", "echo_spacing"):
            vals = []
            for el in _children(seq, name):
                try:
                    vals.append(float(el.text))
                except (TypeError, ValueError):
                    continue
            if vals:
                out[name] = vals
    return out


def parse_header(xml, encoding: int = 0, source=None) -> MRDHeader:
    """Parse an ISMRMRD XML header (text or bytes); ``encoding`` picks the encoding element (0: the first).

    Raises DataError naming the field (and ``source``, the file, where given) for a malformed document, a missing
    encoded/recon matrix, a number that is not one, a field of view <= 0, inconsistent encoding limits or an
    unknown trajectory."""
    try:
        return _parse(xml, encoding)
    except DataError as e:
        if source is None:
            raise
        raise DataError(f"{source}: {e}") from None


def _parse(xml, encoding: int) -> MRDHeader:
    where = "/dataset/xml"
    text = xml.decode("utf-8", errors="replace") if isinstance(xml, (bytes, bytearray)) else str(xml)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise DataError(f"{where}: not an ISMRMRD XML header ({e})") from None
    if _local(root.tag) != "ismrmrdHeader":
        raise DataError(f"{where}: the root element is <{_local(root.tag)}>, expected <ismrmrdHeader> (ISMRMRD XML)")
    encodings = _children(root, "encoding")
    if not encodings:
        raise DataError(f"{where}: encoding: missing from the ISMRMRD header; the reconstruction needs one")
    if not 0 <= encoding < len(encodings):
        raise DataError(f"encoding {encoding}: the ISMRMRD header has {len(encodings)} encoding element(s) "
                        f"(valid: 0..{len(encodings) - 1})")
    enc = encodings[encoding]
    prefix = f"encoding[{encoding}]"
    enc_matrix, enc_fov = _space(enc, prefix, "encodedSpace", True)
    rec_matrix, rec_fov = _space(enc, prefix, "reconSpace", True)
    traj = _text(enc, "trajectory")
    if traj is None:
        raise DataError(f"{prefix}/trajectory: missing from the ISMRMRD header; expected one of {list(TRAJECTORIES)}")
    if traj.lower() not in TRAJECTORIES:
        raise DataError(f"{prefix}/trajectory = {traj!r}: unknown trajectory; expected one of {list(TRAJECTORIES)}")
    rnbw = _number("acquisitionSystemInformation/relativeReceiverNoiseBandwidth",
                   _text(root, "acquisitionSystemInformation/relativeReceiverNoiseBandwidth"), float, False)
    if rnbw is not None and not 0 < rnbw <= 2:
        raise DataError(f"acquisitionSystemInformation/relativeReceiverNoiseBandwidth = {rnbw:g}: expected a "
                        f"relative bandwidth in (0, 2] (typically 0.79 to 1)")
    channels = _number("acquisitionSystemInformation/receiverChannels",
                       _text(root, "acquisitionSystemInformation/receiverChannels"), int, False, 1)
    return MRDHeader(xml=text, encoding=encoding, encoded_matrix=enc_matrix, recon_matrix=rec_matrix,
                     encoded_fov=enc_fov, recon_fov=rec_fov, limits=_limits(enc, prefix), trajectory=traj.lower(),
                     trajectory_identifier=_text(enc, "trajectoryDescription/identifier"),
                     noise_bandwidth=rnbw, receiver_channels=channels, info=_info(root))
