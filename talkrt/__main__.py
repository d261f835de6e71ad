"""`python -m talkrt` runs the CLI."""

from talkrt.cli import main

main()
