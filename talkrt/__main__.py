"""`python -m talkrt` runs the CLI."""

from talkrt.cli import main

import sys

sys.exit(main())
