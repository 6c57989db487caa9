"""``python -m polyparam``: the same as the ``polyparam`` command."""

import sys

from polyparam._cli import main

sys.exit(main())
