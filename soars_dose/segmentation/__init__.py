"""SOARS segmentation backend: OAR catalogue, preprocessing, NAS UNet, model files, export.

Import layout
-------------
* :mod:`.catalogue`, :mod:`.preprocess`, :mod:`.export` and :mod:`.phantom42`
  (the synthetic 42-OAR phantom) need only numpy, scipy and pydicom, like
  the rest of soars-dose.
* :mod:`.nas`, :mod:`.modelfile`, :mod:`.branches` (the four SOARS
  networks), :mod:`.bundle` (trained models), :mod:`.training` and
  :mod:`.inference` need PyTorch (the optional ``segmentation`` extra,
  ``pip install -e .[segmentation]``).

This package file imports none of them, so ``import soars_dose.segmentation``
never pulls in torch.
"""
