"""Public data sets converted for soars-dose: outside the dose-audit core.

* :mod:`.openkbp`: OpenKBP head-and-neck patients (reading, axes, DICOM
  export, compact training arrays).

Nothing here imports torch; the training scripts that consume these
conversions live in ``training/``.
"""
