"""Dose grids, DVHs, dose statistics and the eq 6/7 set comparison."""
