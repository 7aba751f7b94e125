"""Adapters of linalg_pc's algorithms to the interfaces of other frameworks.

Each adapter is a module named after the framework it serves and is imported explicitly, so
that ``import linalg_pc`` never imports the framework:

- :mod:`linalg_pc.integrations.torch`: ``torch.optim.Optimizer`` classes over the
  Kronecker-factored transforms of :mod:`linalg_pc.precond` (``KroneckerOptimizer``, ``SOAP``,
  ``Shampoo``, ``KLShampoo``, ``KLSOAP``). See docs/precond.md, "torch.optim adapter"; their
  data-parallel mode (``process_group=``) lives in ``_torch_distributed`` (docs/precond.md,
  "Data-parallel training").

The layer sits above the algorithms (it imports :mod:`linalg_pc.precond` and the core) and
below the analysis, which may drive an adapter in a study; it is the only place outside the
backend that imports a framework by design.
"""

__all__: list[str] = []
