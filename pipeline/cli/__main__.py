"""``python -m pipeline.cli``: the ``yolo-pipeline`` command."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
