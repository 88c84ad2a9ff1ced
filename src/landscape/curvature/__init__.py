"""Curvature of neural-network losses: Hessian/GGN operators and estimators on them."""

from landscape.curvature.linop import DenseOperator, SymmetricOperator, as_operator

__all__ = ["SymmetricOperator", "DenseOperator", "as_operator"]
