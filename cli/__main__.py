"""``python -m cli`` runs the ``statcube`` command."""

import sys

from cli.main import main

sys.exit(main())
