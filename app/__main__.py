"""``python -m app``: the operator's command line (``app.ops.cli``)."""

from app.ops.cli import main

main()
