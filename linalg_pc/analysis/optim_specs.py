"""The optimizer configurations the optimizer study compares (no PyTorch here: the names are
checked before the study imports anything heavy).

AdamW; SOAP, KL-SOAP and KL-Shampoo of :mod:`linalg_pc.precond` with fp32 or bf16 storage
(``storage=``), full or subspace basis refreshes (``basis_update=``, k = d/8) and each bf16 basis
scheme (``basis_scheme=``, docs/precond.md), SOAP without its factors (``factor_free=True``);
and ``pytorch_optimizer.SOAP`` as the peer anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OptimizerSpec", "OPTIMIZERS"]


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer configuration of the study."""

    name: str
    kind: str  # "adamw", "peer-soap", or a linalg_pc method: "soap", "kl_soap", "kl_shampoo"
    storage: str = "fp32"
    basis_update: str = "full"
    basis_scheme: str | None = None
    #: keep no d×d factors (``soap(factor_free=True)``; subspace refreshes only)
    factor_free: bool = False


def _sub(name, kind, scheme):
    return OptimizerSpec(name, kind, "bf16", "subspace", scheme)


#: Every configuration, in report order.
OPTIMIZERS: dict[str, OptimizerSpec] = {s.name: s for s in (
    OptimizerSpec("AdamW", "adamw"),
    OptimizerSpec("pytorch_optimizer SOAP", "peer-soap"),
    OptimizerSpec("SOAP fp32", "soap"),
    OptimizerSpec("SOAP bf16", "soap", "bf16"),
    _sub("SOAP bf16 sub bf16", "soap", "bf16"),
    _sub("SOAP bf16 sub project", "soap", "bf16-project"),
    _sub("SOAP bf16 sub rectify", "soap", "bf16-rectify"),
    OptimizerSpec("SOAP bf16 sub project factor-free", "soap", "bf16", "subspace", "bf16-project",
                  factor_free=True),
    OptimizerSpec("KL-SOAP fp32", "kl_soap"),
    OptimizerSpec("KL-SOAP bf16", "kl_soap", "bf16"),
    _sub("KL-SOAP bf16 sub project", "kl_soap", "bf16-project"),
    OptimizerSpec("KL-Shampoo fp32", "kl_shampoo"),
    OptimizerSpec("KL-Shampoo bf16", "kl_shampoo", "bf16"),
)}

