"""New DICOM UIDs for the files soars-dose writes.

UIDs come from :func:`pydicom.uid.generate_uid` under pydicom's registered
root. Passing ``entropy`` makes a UID *deterministic*: the same strings give
the same UID on every run and machine, which keeps synthetic data sets
(:mod:`soars_dose.synthetic.cohort`) reproducible byte for byte.
"""

from __future__ import annotations

from pydicom.uid import UID, generate_uid

__all__ = ["new_uid"]


def new_uid(*entropy: object) -> UID:
    """Return a new, valid DICOM UID (at most 64 characters).

    Parameters
    ----------
    *entropy : object
        Optional values (converted with ``str``) from which the UID is
        derived deterministically (a hash of them under pydicom's UID root).
        Without any, the UID is random.

    Returns
    -------
    pydicom.uid.UID
        The UID.

    Examples
    --------
    >>> new_uid("patient-1", "study") == new_uid("patient-1", "study")
    True
    >>> new_uid() != new_uid()
    True
    """
    if entropy:
        return generate_uid(entropy_srcs=[str(e) for e in entropy])
    return generate_uid()
