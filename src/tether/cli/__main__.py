"""``python -m tether.cli``: the same command as ``tether``."""

from tether.cli import main

main()
