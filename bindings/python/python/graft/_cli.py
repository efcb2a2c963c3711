"""The ``graft`` command of the Python package: the same command line as the native binary."""

import signal
import sys

from graft._graft import main as _main


def main() -> None:
    # Python's own Ctrl-C handler would only run once graft returns; the command should stop at once, as
    # the native binary does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(_main(sys.argv))
