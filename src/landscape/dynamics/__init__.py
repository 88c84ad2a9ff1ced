"""Dynamics on loss landscapes: SGD and its noise as processes in parameter space.

* :mod:`~landscape.dynamics.sde`: 2D surfaces with known minima, eq. (7)'s basin
  occupancy ``Pr(basin i) ~ exp(-L_i / T_eff) / sqrt(det H_i)`` with
  ``T_eff = eta s^2 / (2 B)``, exact Gibbs masses, Euler-Maruyama of the SDE and plain SGD
  with exactly isotropic gradient noise, and the occupancy study comparing them (Li, Tai &
  E 2017; Jastrzebski et al. 2017).
* :mod:`~landscape.dynamics.escape`: escape trials from a sharp minimum under SGD,
  isotropic and projected noise (Zhu et al. 2019).

Pure library: any surface or model, randomness passed in as a seed, no params or files.
"""

from .sde import (
    Basin,
    GaussianWells,
    OccupancyRow,
    OccupancyStudy,
    Surface2D,
    TiltedDoubleWell,
    assign_basins,
    effective_temperature,
    gibbs_occupancy,
    occupancy_study,
    predicted_occupancy,
    simulate_sde,
    simulate_sgd,
    whitened_noise_data,
)

__all__ = [
    "Basin",
    "GaussianWells",
    "OccupancyRow",
    "OccupancyStudy",
    "Surface2D",
    "TiltedDoubleWell",
    "assign_basins",
    "effective_temperature",
    "gibbs_occupancy",
    "occupancy_study",
    "predicted_occupancy",
    "simulate_sde",
    "simulate_sgd",
    "whitened_noise_data",
]
