"""`python -m unseen` (and `torchrun -m unseen`) run the command line."""

from unseen.cli import main

main()
