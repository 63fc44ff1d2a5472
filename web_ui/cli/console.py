"""Where the ``flowkit`` commands write: standard output for results, standard error
for problems (rich consoles, no highlighting, long lines kept whole)."""

from rich.console import Console

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)
