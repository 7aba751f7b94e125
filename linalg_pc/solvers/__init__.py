"""Solvers: PCG (dense, sparse, operator, multi-RHS, batched), block-Schur degeneracy analysis
with targeted preconditioning (DCReg), and Woodbury / Sherman–Morrison inverse updates."""

from .degenerate import DegenerateSolveResult, solve_degenerate
from .pcg import PCGResult, pcg
from .schur import (
    DegeneracyReport,
    SchurComplements,
    block_degeneracy,
    schur_complements,
    targeted_preconditioner,
)
from .woodbury import ShermanMorrisonResult, WoodburyInverse, sherman_morrison_update

__all__ = [
    "pcg",
    "PCGResult",
    "schur_complements",
    "SchurComplements",
    "block_degeneracy",
    "DegeneracyReport",
    "targeted_preconditioner",
    "solve_degenerate",
    "DegenerateSolveResult",
    "WoodburyInverse",
    "sherman_morrison_update",
    "ShermanMorrisonResult",
]
