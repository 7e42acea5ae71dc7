"""Entry point: ``python worker.py [options]`` runs the Temporal worker and the HTTP intake.

The same as ``remediator worker``; see ``python worker.py --help`` and the README's
configuration table. One place builds the Client and the Worker: remediator.app.runtime.
"""

import sys

from remediator.cli import main

if __name__ == "__main__":
    main(["worker", *sys.argv[1:]])
