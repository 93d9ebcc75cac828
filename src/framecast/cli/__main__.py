"""``python -m framecast ...``: the ``framecast`` command, for environments without its script."""

import sys

from framecast.cli import main

if __name__ == "__main__":
    sys.exit(main())
