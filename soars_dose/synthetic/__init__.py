"""Synthetic data with a known truth: analytic shapes (:mod:`.shapes`), the demo
head-and-neck cohort written as DICOM-RT (:mod:`.cohort`) and the 42-OAR arrays
(:mod:`.oars42`). None of it imports torch."""
