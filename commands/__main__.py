"""`python -m releasegate.commands ...`: the operator commands (commands/cli.py)."""

from __future__ import annotations

import sys

from releasegate.commands.cli import main

sys.exit(main())
