"""OpenKBP head-and-neck patients: reading, axes, DICOM export and compact training arrays.

OpenKBP (Babier et al., Med Phys 2021) ships 340 head-and-neck IMRT
patients on a fixed ``128 x 128 x 128`` grid. The modules:

* :mod:`.axes`: OpenKBP's ``[i, j, k]`` arrays onto a soars-dose
  :class:`~soars_dose.grid.Grid` (HFS, LPS mm), masks as voxel-face contours;
* :mod:`.read`: patients from sparse-CSV folders or ``.npz`` files;
* :mod:`.dicom_export`: a patient as CT series + RTDOSE + RTSTRUCT;
* :mod:`.training_arrays`: a whole split packed into one compact ``.npz``
  for training the segmentation branches.

The names below are re-exported for ``from soars_dose.datasets import openkbp``.
No module here imports torch. The command line
(``python training/openkbp/export_data.py``) lives with the training scripts.
"""

from .axes import (
    OPENKBP_SHAPE,
    from_lps_axes,
    openkbp_grid,
    to_lps_axes,
    voxel_edge_contours,
)
from .dicom_export import DicomExport, write_dicom, write_masks_rtstruct
from .read import (
    DEFINITION_NOTES,
    OAR_NAMES,
    STRUCTURE_MAP,
    TARGET_NAMES,
    OpenKBPPatient,
    iter_split,
    list_patients,
    read_patient,
)
from .training_arrays import (
    BRANCH_STRATA,
    CT_STEP_HU,
    CT_WINDOW_HU,
    TRAINING_BRANCHES,
    TrainingArraysSummary,
    dataset_cases,
    decode_ct,
    encode_ct,
    read_training_arrays,
    training_crop,
    write_training_arrays,
)

__all__ = [
    "BRANCH_STRATA",
    "CT_STEP_HU",
    "CT_WINDOW_HU",
    "DEFINITION_NOTES",
    "OAR_NAMES",
    "OPENKBP_SHAPE",
    "STRUCTURE_MAP",
    "TARGET_NAMES",
    "TRAINING_BRANCHES",
    "DicomExport",
    "OpenKBPPatient",
    "TrainingArraysSummary",
    "dataset_cases",
    "decode_ct",
    "encode_ct",
    "from_lps_axes",
    "iter_split",
    "list_patients",
    "openkbp_grid",
    "read_patient",
    "read_training_arrays",
    "to_lps_axes",
    "training_crop",
    "write_training_arrays",
    "voxel_edge_contours",
    "write_dicom",
    "write_masks_rtstruct",
]
