"""`python -m releasegate status|rollback|switch|promote|abort`: the operator commands (commands/cli.py)."""

from __future__ import annotations

import sys

from releasegate.commands.cli import main

sys.exit(main())
