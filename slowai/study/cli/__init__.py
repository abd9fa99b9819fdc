"""The command line every study script shares: its flags, their checks, and where the workers run (here, local
processes, or a Slurm job array)."""

from slowai.study.cli.command import main
from slowai.study.cli.flags import build_parser

__all__ = ["build_parser", "main"]
