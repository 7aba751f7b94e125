"""Solvers: PCG (dense, sparse, operator, multi-RHS, batched), block-Schur degeneracy analysis
with targeted preconditioning (DCReg), and Woodbury / Sherman–Morrison inverse updates."""

from .pcg import PCGResult, pcg

__all__ = ["pcg", "PCGResult"]
