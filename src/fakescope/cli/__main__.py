"""`python -m fakescope.cli` (and `torchrun -m fakescope.cli`): the same CLI."""
import sys

from . import app

sys.exit(app())
