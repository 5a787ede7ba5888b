"""``python -m broker.cli``: the same as the ``albireo`` command."""

from broker.cli import main

main()
