"""Helpers for `scripts/bench` (issue 7): data builder, alternating timer, peers, workloads.

Not part of the installed `ocifs` package; run through `scripts/bench`.
"""
