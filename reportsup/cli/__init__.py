"""One thin argparse module per ``reportsup-*`` console script; nothing imports this package."""
