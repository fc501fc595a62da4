"""`python -m rnnlab` = train (see rnnlab.train)."""

from rnnlab.train import main

main()
