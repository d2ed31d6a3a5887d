"""Contour accuracy, cohort tables, statistics and the HTML report."""
