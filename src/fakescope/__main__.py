"""`python -m fakescope ...`: the same command line as `fakescope ...`."""
from .cli import app

app(prog_name="fakescope")
