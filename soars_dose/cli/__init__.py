"""The ``soars-dose`` command line."""
