"""Runnable studies: `python -m studies.<name> --help`."""
