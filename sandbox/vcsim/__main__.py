"""python -m sandbox.vcsim: same as `snapship-sandbox vcenter`."""

import sys

from sandbox.cli import vcenter_main

sys.exit(vcenter_main(sys.argv[1:]))
