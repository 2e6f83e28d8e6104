"""``python -m ezrunner_server MODEL_DIR ...`` (or ``python -m ezrunner.images.server``)."""

import sys

from .cli import main

sys.exit(main())
