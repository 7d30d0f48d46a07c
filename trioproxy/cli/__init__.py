"""The command line: serving, `--check-config`, `models`, `status`, `stop`.

`main` is the console script's entry point (pyproject's `trioproxy.cli:main`).
"""

from .main import main

__all__ = ["main"]
