"""Checkers for chaos-run histories: linearizability of registers, sets, convergence.

Every checker is pure: it takes recorded operations (`shoal.chaos.history`) or
observed state and returns a frozen result with a verdict and a human summary.
A linearizability "timeout" is a failure, not a pass (DESIGN.md section 6).
"""
from __future__ import annotations

from shoal.chaos.checkers.linearizability import (
    REGISTER_KINDS,
    KeyVerdict,
    LinearizabilityResult,
    check_register,
)
from shoal.chaos.checkers.sets import (
    ConvergenceResult,
    SetResult,
    ShardDivergence,
    check_convergence,
    check_set,
)

__all__ = [
    "REGISTER_KINDS",
    "ConvergenceResult",
    "KeyVerdict",
    "LinearizabilityResult",
    "SetResult",
    "ShardDivergence",
    "check_convergence",
    "check_register",
    "check_set",
]
