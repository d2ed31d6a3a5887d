"""SOARS segmentation backend: preprocessing, NAS UNet, model files, export.

The OAR catalogue is :mod:`soars_dose.oars` and the synthetic 42-OAR
phantom :mod:`soars_dose.synthetic.oars42` (both torch-free).

Import layout
-------------
* :mod:`.dataset` (the training data set format), :mod:`.preprocess` and
  :mod:`.export` need only numpy, scipy and pydicom, like the rest of
  soars-dose.
* :mod:`.nas`, :mod:`.modelfile`, :mod:`.branches` (the four SOARS
  networks), :mod:`.bundle` (trained models), :mod:`.device`,
  :mod:`.sliding_window`, :mod:`.training` (a package) and
  :mod:`.inference` need PyTorch (the optional ``segmentation`` extra,
  ``pip install -e .[segmentation]``).

Dependencies run one way: ``training`` uses ``inference`` (validation and
the anchor maps of later branches); ``inference`` and ``training`` share
``device`` and ``sliding_window`` and import nothing of each other's.

This package file imports none of them, so ``import soars_dose.segmentation``
never pulls in torch.
"""
