"""Subspace basis updates, basis completion and drift-free BF16 basis storage.

- :func:`complete_basis`: the orthonormal complement of an orthonormal d×k block;
- :func:`subspace_refresh`: one orthogonal-iteration step on k columns of a basis (rotate /
  project), :func:`select_columns` (cyclic, topk, residual, random), :func:`eigenbasis_quality`;
- :class:`StoredBasis`: a basis kept in fp32, bf16, bf16-project, bf16-rectify or the
  block-rotation reparametrization Q = Q₀·blkdiag(W), over the functional
  :class:`BasisState` of :mod:`linalg_pc.basis.state` (``init``, ``update``, ``apply``,
  ``materialize``, ``rebase``; batched);
- :class:`RefreshInfo`: the typed info of every refresh.

The drifting-factor study of these schemes lives in :mod:`linalg_pc.analysis.basis_study`.
"""

from ._common import ORTHONORMALITY_TOL
from ._refresh import RefreshInfo
from .completion import complete_basis
from .state import STATE_SCHEMES, BasisState
from .storage import STORAGE_SCHEMES, BasisUpdate, StoredBasis, bjorck_step
from .subspace import (
    COLUMN_POLICIES,
    SubspaceRefresh,
    eigenbasis_quality,
    select_columns,
    subspace_refresh,
)

__all__ = [
    "ORTHONORMALITY_TOL",
    "complete_basis",
    "subspace_refresh",
    "SubspaceRefresh",
    "RefreshInfo",
    "select_columns",
    "eigenbasis_quality",
    "COLUMN_POLICIES",
    "StoredBasis",
    "BasisUpdate",
    "STORAGE_SCHEMES",
    "BasisState",
    "STATE_SCHEMES",
    "bjorck_step",
]
