"""Loss-landscape geometry toolkit: data, models, training, curvature, probes, bounds, statistics.

Subpackages are imported on demand (``import landscape.curvature``) so that a stage pays
only for what it uses. Importing the package pins PyTorch's CPU kernel dispatch
(:mod:`landscape.reproducibility`), so results are bit-identical across x86 machines.
"""

from landscape.reproducibility import pin_cpu_kernels as _pin_cpu_kernels

_pin_cpu_kernels()

__version__ = "0.1.0"
