"""``python -m xccm``: the command line (see :mod:`xccm.cli`)."""

from .cli import console

console()
