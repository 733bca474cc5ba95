"""A release's processes keep their long-lived objects out of the garbage collector's full passes.

A full collection walks every object the process holds. pytest runs several at the end of every session (its
unraisableexception plugin, to report exceptions raised in finalizers), and rendering the HTML report, which
allocates a lot, triggers more. In a release's processes nearly all of those objects are imports (pydantic's
models, Plotly's validators), the config and the collected items, all of which live until the process ends:
at the end of a release they cost 0.08-0.11 s of collections per process on a quiet machine, and under xdist
the controller's came at the very moment four workers were exiting beside it (0.25 s measured on two cores).

gc.freeze() moves every object that exists into a generation the collector never walks (it costs nothing).
A release freezes after collection (the only process, each xdist worker) and again once the HTML warm-up has
imported Plotly (the reporting process; plugins/finish.py). Objects created later, by the tests, the loads and
the reports, are collected as before, and pytest's check for exceptions in finalizers still covers them. What
it gives up: a reference cycle that existed before a freeze is never collected; it lives until the process
ends. They stay frozen to the end on purpose: the interpreter's own last collection at exit skips them too
(thawing them at the end of the session measured 0.15-0.3 s more at exit). A release is the last thing its
process does (the `pytest` command, an xdist worker); a program that calls pytest.main() for a release and
goes on may call gc.unfreeze() itself.
"""

from __future__ import annotations

import gc

import pytest


def freeze_long_lived() -> None:
    """Everything that exists now is left out of the collector's passes (gc.freeze)."""
    gc.freeze()


class FrozenHeap:
    """Registered on every process of a release."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        freeze_long_lived()
