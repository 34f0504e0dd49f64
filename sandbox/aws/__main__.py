"""``python -m sandbox.aws``: run the local AWS endpoint in the foreground."""

import sys

from sandbox.aws.server import main

if __name__ == "__main__":
    sys.exit(main())
