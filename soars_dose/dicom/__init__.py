"""Reading and writing DICOM CT series, RTSTRUCT and RTDOSE (pydicom 3)."""
