"""soars-dose: dose audit of OAR contour sets on a fixed RTDOSE grid.

The public API lives in :mod:`soars_dose.audit` (load a case, compute
DVHs, compare sets, write results); the data model is
:class:`~soars_dose.grid.Grid`, :class:`~soars_dose.structures.StructureSet`,
:class:`~soars_dose.dosegrid.DoseGrid` and :class:`~soars_dose.dose.dvh.DVH`.
"""

from .errors import SoarsDoseError, SoarsDoseWarning

__version__ = "0.1.0"
__all__ = ["SoarsDoseError", "SoarsDoseWarning", "__version__"]
