"""``python -m m2wsgi``: the ``m2wsgi`` command."""

from . import main

main()
