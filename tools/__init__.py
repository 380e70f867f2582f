"""Command-line tools that are not training (summaries, bulk labelling, checks); each is a console script."""
