"""Dynamics on loss landscapes: SGD and its noise models as processes in parameter space.

Modules, one method each: :mod:`~landscape.dynamics.escape` (escape trials from a sharp
minimum under SGD, isotropic and projected noise; Zhu et al. 2019).
"""
