"""Loss-landscape geometry toolkit: data, models, training, curvature, probes, bounds, statistics.

Subpackages are imported on demand (``import landscape.curvature``) so that a stage pays
only for what it uses.
"""

__version__ = "0.1.0"
