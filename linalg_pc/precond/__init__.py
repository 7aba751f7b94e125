from .kronecker import KroneckerOperator  # noqa: F401
