"""`python -m vidqueue` runs the command line."""

from vidqueue.cli import main

main()
