"""SOARS segmentation backend: OAR catalogue, preprocessing, NAS UNet, model files, export.

Import layout
-------------
* :mod:`.catalogue`, :mod:`.preprocess` and :mod:`.export` need only numpy,
  scipy and pydicom, like the rest of soars-dose.
* :mod:`.nas` and :mod:`.modelfile` need PyTorch (the optional
  ``segmentation`` extra, ``pip install -e .[segmentation]``).

This package file imports none of them, so ``import soars_dose.segmentation``
never pulls in torch.
"""
