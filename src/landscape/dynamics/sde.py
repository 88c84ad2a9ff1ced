"""SGD as a stochastic differential equation on synthetic 2D surfaces: basin occupancy.

First research plan, section 2.1: SGD with step ``eta`` and batch size ``B`` is modelled by
eq. (6), ``d theta = -grad L dt + sqrt(eta / B) Sigma^{1/2} dW`` (Li, Tai & E 2017,
*Stochastic modified equations*; Mandt, Hoffman & Blei 2017; Jastrzebski et al. 2017,
*Three factors influencing minima in SGD*), and eq. (7) predicts
``Pr(basin i) ~ exp(-L_i / T_eff) / sqrt(det H_i)``.

Derivation of ``T_eff`` (isotropic noise). With ``Sigma = s^2 I`` eq. (6) reads
``d theta = -grad L dt + sqrt(2 T) dW`` with ``T = eta s^2 / (2 B)``. The Fokker-Planck
equation ``dp/dt = div(p grad L) + T lap p`` has the Gibbs law ``p(theta) ~ exp(-L(theta) / T)``
as stationary density (zero probability flux), so ``T_eff = eta s^2 / (2 B)``. The mass of
basin ``i`` is ``int_{basin i} exp(-L / T)``; Laplace's method around the minimum
``theta_i`` (Hessian ``H_i``, dimension ``d``) gives
``exp(-L_i / T) (2 pi T)^{d/2} / sqrt(det H_i)``, i.e. eq. (7) (the common factor
``(2 pi T)^{d/2}`` cancels). Conditions:

* isotropic, state-independent noise (``Sigma = s^2 I``). For constant anisotropic
  ``Sigma`` the Gibbs law is stationary only if ``Sigma`` is a multiple of the identity (the
  drift would have to be ``-Sigma grad L``). If ``Sigma = c H`` in a quadratic basin (the
  common "noise aligned with curvature" model), the local stationary covariance ``C``
  solves ``H C + C H = (eta c / B) H``, so ``C = (eta c / 2B) I``: the spread no longer
  depends on ``H`` and the ``1/sqrt(det H_i)`` volume factor of eq. (7) disappears from the
  local law; basin probabilities are then set by the (anisotropic) escape rates and need
  not follow eq. (7) at all;
* low temperature, ``T << barrier heights``: the Laplace approximation and the basin
  split are accurate up to ``O(T)`` relative corrections (and exponentially small
  tails); at ``T`` comparable to the barriers, the basins are not well separated and
  eq. (7) breaks;
* stationarity: the simulated horizon must exceed the inter-basin relaxation time, which
  grows like ``exp(barrier / T)`` (Kramers); at very low ``T`` the occupancy stays frozen
  at its initial split. The studies therefore choose moderate ``barrier / T``;
* small steps: Euler-Maruyama (and SGD, whose step is ``dt = eta``) inflate the variance
  in a direction of curvature ``lambda`` by ``1 / (1 - eta lambda / 2)``.

Two simulators, vectorised over runs (particles) in torch:

(a) :func:`simulate_sde`: Euler-Maruyama of eq. (6) with ``Sigma = s^2 I`` (or a given
    constant ``Sigma^{1/2}`` matrix).
(b) :func:`simulate_sgd`: plain SGD on a finite data set whose empirical loss equals the
    surface exactly and whose per-sample gradient noise is known: per-sample loss
    ``l_k(theta) = L(theta) + s z_k^T theta`` with ``z_1..z_n`` centred and whitened
    (``mean z = 0``, ``(1/n) sum z z^T = I`` exactly), so the mean loss is ``L`` and the
    per-sample gradient covariance is ``Sigma = s^2 I``. Minibatches of ``B`` indices are
    drawn with replacement, so the minibatch gradient noise has covariance ``s^2 I / B``
    exactly, and ``T_eff = eta s^2 / (2 B)`` as for (a) with ``dt = eta``.

Occupancy: each run's final point is assigned to a basin by deterministic descent from
it, then to the nearest minimum; counts give Wilson score intervals, which are compared
with eq. (7) and with the exact Gibbs basin masses computed by quadrature on a grid (the
reference that separates Laplace error from simulation error). With runs started evenly
in the minima, the final occupancies of the groups started in different minima are
compared too: if they differ, the runs have not forgotten their start (not mixed) and
no stationary prediction can be checked.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.seeding import seeded_generator
from landscape.stats.intervals import wilson_bounds

__all__ = [
    "Basin",
    "Surface2D",
    "TiltedDoubleWell",
    "GaussianWells",
    "effective_temperature",
    "predicted_occupancy",
    "gibbs_occupancy",
    "assign_basins",
    "whitened_noise_data",
    "simulate_sde",
    "simulate_sgd",
    "OccupancyRow",
    "OccupancyStudy",
    "occupancy_study",
]


@dataclass(frozen=True)
class Basin:
    """A local minimum of a surface.

    Attributes:
        center: (2,) location of the minimum.
        loss: ``L`` at the minimum.
        hessian: (2, 2) Hessian at the minimum.
    """

    center: np.ndarray
    loss: float
    hessian: np.ndarray

    @property
    def det_hessian(self) -> float:
        return float(np.linalg.det(self.hessian))

    def to_dict(self) -> dict[str, Any]:
        return {"center": self.center.tolist(), "loss": self.loss, "hessian": self.hessian.tolist(), "det_hessian": self.det_hessian}


class Surface2D:
    """A smooth loss surface on R^2, vectorised over points of shape (n, 2).

    Subclasses implement :meth:`loss`, :meth:`grad`, :meth:`minima`, :attr:`box` (a
    bounding box ``(xmin, xmax, ymin, ymax)`` holding essentially all the Gibbs mass at
    the temperatures of interest) and optionally :meth:`saddle_losses`.
    """

    box: tuple[float, float, float, float]

    def loss(self, theta: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def grad(self, theta: Tensor) -> Tensor:
        """Gradient (n, 2) (default: autograd of :meth:`loss`)."""
        with torch.enable_grad():
            t = theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.loss(t).sum(), t)
        return g

    def hessian(self, point: Tensor) -> Tensor:
        """Hessian (2, 2) at one point (double backward)."""
        p = point.detach().to(torch.float64).reshape(2)
        return torch.autograd.functional.hessian(lambda q: self.loss(q[None, :])[0], p)

    def minima(self) -> tuple[Basin, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def saddle_losses(self) -> np.ndarray | None:
        """Loss at the saddle(s) separating the basins, if known (for barrier / T)."""
        return None

    def quadrature_box(self, temperature: float) -> tuple[float, float, float, float]:  # noqa: ARG002  (overrides use it)
        """A box outside which the Gibbs weight ``exp(-(L - L_min)/T)`` is negligible
        (default: :attr:`box`)."""
        return self.box

    def describe(self) -> dict[str, Any]:
        return {"surface": type(self).__name__}

    def _basin(self, center: Tensor) -> Basin:
        c = center.detach().to(torch.float64).reshape(2)
        return Basin(c.numpy().copy(), float(self.loss(c[None, :])[0]), self.hessian(c).numpy().copy())

    def _newton(self, start: Tensor, iters: int = 100) -> Tensor:
        x = start.detach().to(torch.float64).reshape(2).clone()
        for _ in range(iters):
            g = self.grad(x[None, :])[0]
            h = self.hessian(x)
            step = torch.linalg.solve(h, g)
            x = x - step
            if float(step.norm()) < 1e-14:
                break
        return x


class TiltedDoubleWell(Surface2D):
    """``L(x, y) = h (x^2 - 1)^2 + tilt x + kappa(x) y^2 / 2``, a double well in x.

    ``kappa(x) = kappa_left + (kappa_right - kappa_left) sigmoid(x / width)`` sets the
    curvature across the valley (flat vs sharp basin); ``tilt`` sets the depth difference.
    Minima at ``y = 0`` and the two outer roots of ``4 h x (x^2 - 1) + tilt = 0``, with
    ``det H_i = (12 h x_i^2 - 4 h) kappa(x_i)``; the saddle is the middle root.

    Args:
        height: ``h > 0`` (barrier height ``h`` when ``tilt = 0``).
        tilt: Linear tilt, ``|tilt| < 8 h / (3 sqrt 3)`` so that two minima exist.
        kappa_left: Valley curvature on the left (``> 0``).
        kappa_right: Valley curvature on the right (``> 0``).
        width: Width of the curvature switch around ``x = 0`` (``> 0``).
    """

    def __init__(self, height: float = 1.0, tilt: float = 0.0, kappa_left: float = 1.0, kappa_right: float = 1.0, width: float = 0.2):
        for name, v in (("height", height), ("kappa_left", kappa_left), ("kappa_right", kappa_right), ("width", width)):
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if not abs(tilt) < 8 * height / (3 * math.sqrt(3)):
            raise ValueError(f"|tilt| must be < 8 h / (3 sqrt 3) = {8 * height / (3 * math.sqrt(3)):.4g} for two minima, got {tilt!r}")
        self.h, self.tilt, self.kl, self.kr, self.w = float(height), float(tilt), float(kappa_left), float(kappa_right), float(width)
        roots = np.sort(np.roots([4 * self.h, 0.0, -4 * self.h, self.tilt]).real)
        self._roots = roots
        self.box = (-2.2, 2.2, -6.0 / math.sqrt(min(self.kl, self.kr)), 6.0 / math.sqrt(min(self.kl, self.kr)))

    def _kappa(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = torch.sigmoid(x / self.w)
        return self.kl + (self.kr - self.kl) * s, (self.kr - self.kl) * s * (1 - s) / self.w

    def loss(self, theta: Tensor) -> Tensor:
        x, y = theta[..., 0], theta[..., 1]
        k, _ = self._kappa(x)
        return self.h * (x * x - 1) ** 2 + self.tilt * x + 0.5 * k * y * y

    def grad(self, theta: Tensor) -> Tensor:
        x, y = theta[..., 0], theta[..., 1]
        k, dk = self._kappa(x)
        gx = 4 * self.h * x * (x * x - 1) + self.tilt + 0.5 * dk * y * y
        return torch.stack([gx, k * y], dim=-1)

    def minima(self) -> tuple[Basin, ...]:
        return tuple(self._basin(torch.tensor([float(r), 0.0], dtype=torch.float64)) for r in (self._roots[0], self._roots[2]))

    def saddle_losses(self) -> np.ndarray:
        return self.loss(torch.tensor([[float(self._roots[1]), 0.0]], dtype=torch.float64)).numpy()

    def quadrature_box(self, temperature: float) -> tuple[float, float, float, float]:
        """``h (x^2 - 1)^2 <= 30 T + 2 |tilt| x_max`` and ``kappa_min y^2 / 2 <= 30 T``."""
        xm = math.sqrt(1.0 + math.sqrt((30.0 * temperature + 3.0 * abs(self.tilt)) / self.h)) + 0.1
        ym = math.sqrt(60.0 * temperature / min(self.kl, self.kr))
        return (-xm, xm, -ym, ym)

    def describe(self) -> dict[str, Any]:
        return {"surface": "TiltedDoubleWell", "height": self.h, "tilt": self.tilt, "kappa_left": self.kl, "kappa_right": self.kr,
                "width": self.w}


class GaussianWells(Surface2D):
    """``L = -sum_k d_k exp(-||(theta - c_k) / s_k||^2 / 2) + confine ||theta||^2 / 2``.

    Well ``k`` has depth about ``d_k`` and curvatures about ``d_k / s_k^2`` (per axis when
    ``s_k`` is a pair); the weak quadratic confinement keeps the Gibbs law normalisable.
    Minima are located by Newton's method from the centres; the barrier estimate is the
    highest loss on the straight segment between consecutive minima (an upper bound on the
    saddle).

    Args:
        centers: (K, 2) well centres.
        depths: (K,) positive depths.
        widths: (K,) or (K, 2) positive widths.
        confine: Coefficient of the confinement (``>= 0``).
        box: Plot box; default: centres +- 4 widths (the quadrature box also covers the
            confinement's reach, see :meth:`quadrature_box`).
    """

    def __init__(
        self,
        centers: Sequence[Sequence[float]],
        depths: Sequence[float],
        widths: Sequence[float] | Sequence[Sequence[float]],
        confine: float = 0.05,
        box: tuple[float, float, float, float] | None = None,
    ):
        c = torch.as_tensor(np.asarray(centers, dtype=np.float64))
        d = torch.as_tensor(np.asarray(depths, dtype=np.float64))
        w = torch.as_tensor(np.asarray(widths, dtype=np.float64))
        if c.ndim != 2 or c.shape[1] != 2 or c.shape[0] < 2:
            raise ValueError(f"centers must have shape (K, 2) with K >= 2, got {tuple(c.shape)}")
        k = c.shape[0]
        if d.shape != (k,) or not bool(torch.all(d > 0)):
            raise ValueError(f"depths must be {k} positive numbers, got {depths!r}")
        if w.ndim == 1:
            w = w[:, None].expand(k, 2).clone()
        if w.shape != (k, 2) or not bool(torch.all(w > 0)):
            raise ValueError(f"widths must have shape ({k},) or ({k}, 2) and be positive, got {widths!r}")
        if not (isinstance(confine, (int, float)) and confine >= 0):
            raise ValueError(f"confine must be >= 0, got {confine!r}")
        self.c, self.d, self.s, self.confine = c, d, w, float(confine)
        if box is None:
            lo = (c - 4 * w).min(0).values
            hi = (c + 4 * w).max(0).values
            box = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
        self.box = box

    def loss(self, theta: Tensor) -> Tensor:
        c, d, s = (t.to(theta) for t in (self.c, self.d, self.s))
        z = (theta[..., None, :] - c) / s
        return -(d * torch.exp(-0.5 * (z * z).sum(-1))).sum(-1) + 0.5 * self.confine * (theta * theta).sum(-1)

    def grad(self, theta: Tensor) -> Tensor:
        c, d, s = (t.to(theta) for t in (self.c, self.d, self.s))
        z = (theta[..., None, :] - c) / s
        e = d * torch.exp(-0.5 * (z * z).sum(-1))
        return (e[..., None] * z / s).sum(-2) + self.confine * theta

    def minima(self) -> tuple[Basin, ...]:
        out: list[Basin] = []
        for k in range(self.c.shape[0]):
            x = self._newton(self.c[k])
            if bool(torch.all(torch.linalg.eigvalsh(self.hessian(x)) > 0)) and all(
                np.linalg.norm(b.center - x.numpy()) > 1e-6 for b in out
            ):
                out.append(self._basin(x))
        return tuple(out)

    def quadrature_box(self, temperature: float) -> tuple[float, float, float, float]:
        """The well box, grown to the radius where the confinement exceeds ``30 T`` plus the
        total well depth (beyond it the Gibbs weight is below ``e^{-30}``)."""
        if self.confine == 0:
            return self.box
        r = math.sqrt(2.0 * (30.0 * temperature + float(self.d.sum())) / self.confine)
        x0, x1, y0, y1 = self.box
        return (min(x0, -r), max(x1, r), min(y0, -r), max(y1, r))

    def saddle_losses(self) -> np.ndarray:
        mins = self.minima()
        highs = []
        t = torch.linspace(0, 1, 2001, dtype=torch.float64)[:, None]
        for a, b in itertools.pairwise(mins):
            ca, cb = torch.as_tensor(a.center), torch.as_tensor(b.center)
            highs.append(float(self.loss(ca + t * (cb - ca)).max()))
        return np.asarray(highs)

    def describe(self) -> dict[str, Any]:
        return {"surface": "GaussianWells", "centers": self.c.tolist(), "depths": self.d.tolist(), "widths": self.s.tolist(),
                "confine": self.confine}


# ------------------------------------------------------------------------- theory


def _check_pos(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


def _check_int(name: str, v: Any, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return v


def effective_temperature(eta: float, batch_size: int, noise_scale: float) -> float:
    """``T_eff = eta s^2 / (2 B)`` for ``Sigma = s^2 I`` (derivation in the module docstring)."""
    return _check_pos("eta", eta) * _check_pos("noise_scale", noise_scale) ** 2 / (2 * _check_int("batch_size", batch_size))


def predicted_occupancy(basins: Sequence[Basin], temperature: float) -> np.ndarray:
    """Eq. (7): ``Pr(i) = exp(-L_i / T) / sqrt(det H_i)``, normalised over the basins.

    Raises:
        ValueError: ``temperature <= 0`` or a basin whose Hessian is not positive definite.
    """
    T = _check_pos("temperature", temperature)
    dets = np.array([b.det_hessian for b in basins])
    if np.any(dets <= 0):
        raise ValueError(f"every basin needs a positive-definite Hessian, got determinants {dets.tolist()}")
    losses = np.array([b.loss for b in basins])
    logw = -(losses - losses.min()) / T - 0.5 * np.log(dets)
    w = np.exp(logw - logw.max())
    return w / w.sum()


def assign_basins(
    surface: Surface2D, points: Tensor, basins: Sequence[Basin], *, steps: int = 300, max_step: float | None = None
) -> Tensor:
    """Basin index (n,) of each point: descend the surface from it, then take the nearest minimum.

    The descent is vectorised over points with a per-point adaptive step (grown by 1.5
    after a step that satisfies the Armijo condition, halved otherwise), so it moves fast
    across flat far-field regions and stays stable near sharp minima. Every step is
    clipped to ``max_step`` (default 0.5% of the diagonal of the box holding the surface
    box and the points), which keeps points from jumping over a ridge unless they start
    within ``max_step`` of it.

    Args:
        steps: Descent iterations.
        max_step: Largest step length.
    """
    x = points.detach().to(torch.float64).clone()
    lmax = max(float(np.linalg.eigvalsh(b.hessian).max()) for b in basins)
    if max_step is None:
        x0, x1, y0, y1 = surface.box
        lo = torch.minimum(x.min(0).values, torch.tensor([x0, y0], dtype=x.dtype, device=x.device))
        hi = torch.maximum(x.max(0).values, torch.tensor([x1, y1], dtype=x.dtype, device=x.device))
        max_step = 0.005 * float((hi - lo).norm())
    eta = torch.full((x.shape[0],), 0.5 / lmax, dtype=x.dtype, device=x.device)
    loss = surface.loss(x)
    for _ in range(steps):
        g = surface.grad(x)
        gn = g.norm(dim=1)
        length = torch.clamp(eta * gn, max=max_step)
        d = -g * (length / torch.clamp(gn, min=1e-300))[:, None]
        x_new = x + d
        loss_new = surface.loss(x_new)
        ok = loss_new <= loss - 0.25 * length * gn
        x = torch.where(ok[:, None], x_new, x)
        loss = torch.where(ok, loss_new, loss)
        eta = torch.where(ok, eta * 1.5, eta * 0.5)
    centers = torch.as_tensor(np.stack([b.center for b in basins]), dtype=x.dtype, device=x.device)
    return torch.cdist(x, centers).argmin(dim=1)


def gibbs_occupancy(surface: Surface2D, temperature: float, *, grid: int = 201, steps: int = 300) -> np.ndarray:
    """Exact stationary basin masses ``int_{basin i} exp(-L/T)`` by quadrature on a grid.

    The region is ``surface.quadrature_box(T)`` cropped (on a 161 x 161 coarse grid) to
    the cells where ``L - L_min < 30 T`` (outside, the Gibbs weight is below ``e^{-30}``),
    then integrated by the midpoint rule on ``grid x grid`` cells; each cell goes to the
    basin its centre descends to (:func:`assign_basins`).
    """
    T = _check_pos("temperature", temperature)
    _check_int("grid", grid, minimum=10)
    basins = surface.minima()
    l_min = min(b.loss for b in basins)

    def centres(box: tuple[float, float, float, float], n: int) -> tuple[Tensor, float, float]:
        x0, x1, y0, y1 = box
        xs = torch.linspace(x0, x1, n + 1, dtype=torch.float64)
        ys = torch.linspace(y0, y1, n + 1, dtype=torch.float64)
        X, Y = torch.meshgrid(0.5 * (xs[1:] + xs[:-1]), 0.5 * (ys[1:] + ys[:-1]), indexing="ij")
        return torch.stack([X.reshape(-1), Y.reshape(-1)], dim=1), (x1 - x0) / n, (y1 - y0) / n

    coarse, hx, hy = centres(surface.quadrature_box(T), 161)
    keep = coarse[surface.loss(coarse) - l_min < 30.0 * T]
    if keep.shape[0] == 0:
        raise ValueError(f"no quadrature cell has L - L_min < 30 T at T = {T}")
    lo, hi = keep.min(0).values, keep.max(0).values
    box = (float(lo[0]) - 1.5 * hx, float(hi[0]) + 1.5 * hx, float(lo[1]) - 1.5 * hy, float(hi[1]) + 1.5 * hy)
    pts, _, _ = centres(box, grid)
    w = torch.exp(-(surface.loss(pts) - l_min) / T)
    idx = assign_basins(surface, pts, basins, steps=steps)
    mass = torch.zeros(len(basins), dtype=torch.float64).index_add_(0, idx, w)
    return (mass / mass.sum()).numpy()


# ---------------------------------------------------------------------- simulation


def _init_points(surface: Surface2D, init: str | Tensor, num_runs: int, gen: torch.Generator) -> Tensor:
    if isinstance(init, Tensor):
        if init.shape != (num_runs, 2):
            raise ValueError(f"init must have shape ({num_runs}, 2), got {tuple(init.shape)}")
        return init.detach().to(torch.float64).clone()
    if init == "minima":
        centers = torch.as_tensor(np.stack([b.center for b in surface.minima()]))
        return centers[torch.arange(num_runs) % len(centers)].clone()
    if init == "uniform":
        x0, x1, y0, y1 = surface.box
        u = torch.rand(num_runs, 2, generator=gen, dtype=torch.float64)
        return torch.stack([x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1]], dim=1)
    raise ValueError(f"init must be 'minima', 'uniform' or a ({num_runs}, 2) tensor, got {init!r}")


def simulate_sde(
    surface: Surface2D,
    *,
    eta: float,
    batch_size: int,
    noise_scale: float = 1.0,
    noise_sqrt: Tensor | None = None,
    dt: float = 0.01,
    horizon: float = 50.0,
    num_runs: int = 1000,
    init: str | Tensor = "minima",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Euler-Maruyama of eq. (6) for ``num_runs`` independent runs; returns final points.

    ``theta <- theta - grad L dt + sqrt(eta / B) M sqrt(dt) xi``, ``xi ~ N(0, I)``, with
    ``M = noise_scale * I`` or ``noise_sqrt`` (a constant (2, 2) ``Sigma^{1/2}``).

    Args:
        eta: SGD step size of the modelled process.
        batch_size: SGD batch size ``B``.
        noise_scale: ``s`` of ``Sigma = s^2 I``.
        noise_sqrt: Optional constant (2, 2) matrix ``Sigma^{1/2}`` (overrides ``noise_scale``).
        dt: Integration step (time units).
        horizon: Simulated time; ``round(horizon / dt)`` steps.
        num_runs: Independent runs (vectorised).
        init: ``"minima"`` (runs split evenly over the minima), ``"uniform"`` (in the
            surface box) or a (num_runs, 2) tensor.
        seed: Seed of the noise (a torch generator on ``device``).
        device: Where to simulate.

    Returns:
        (num_runs, 2) float64 final points (on ``device``).
    """
    _check_pos("eta", eta)
    _check_int("batch_size", batch_size)
    _check_pos("dt", dt)
    _check_pos("horizon", horizon)
    _check_int("num_runs", num_runs)
    if noise_sqrt is None:
        M = _check_pos("noise_scale", noise_scale) * torch.eye(2, dtype=torch.float64)
    else:
        M = torch.as_tensor(noise_sqrt, dtype=torch.float64)
        if M.shape != (2, 2):
            raise ValueError(f"noise_sqrt must be a (2, 2) matrix, got shape {tuple(M.shape)}")
    dev = torch.device(device)
    gen = seeded_generator(seed, device=dev)
    x = _init_points(surface, init, num_runs, seeded_generator(seed)).to(dev)
    amp = (math.sqrt(eta / batch_size * dt) * M).T.to(dev)
    for _ in range(max(1, round(horizon / dt))):
        xi = torch.randn(num_runs, 2, generator=gen, dtype=torch.float64, device=dev)
        x = x - dt * surface.grad(x) + xi @ amp
    return x


def whitened_noise_data(n: int, *, seed: int) -> Tensor:
    """``n`` points ``z_k`` in R^2 with empirical mean exactly 0 and covariance exactly I.

    Raises:
        ValueError: ``n < 3``.
    """
    _check_int("n", n, minimum=3)
    g = seeded_generator(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    cov = z.T @ z / n
    evals, evecs = torch.linalg.eigh(cov)
    return z @ (evecs / evals.sqrt()) @ evecs.T


def simulate_sgd(
    surface: Surface2D,
    *,
    eta: float,
    batch_size: int,
    noise_scale: float = 1.0,
    dataset_size: int = 1000,
    horizon: float = 50.0,
    num_runs: int = 1000,
    init: str | Tensor = "minima",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Plain minibatch SGD on the whitened synthetic data set (module docstring, (b)).

    ``theta <- theta - eta (grad L(theta) + s mean_{k in batch} z_k)``, batches of
    ``batch_size`` indices drawn with replacement; ``round(horizon / eta)`` steps.
    Other arguments as :func:`simulate_sde`.

    Returns:
        (num_runs, 2) float64 final points.
    """
    _check_pos("eta", eta)
    _check_int("batch_size", batch_size)
    s = _check_pos("noise_scale", noise_scale)
    _check_pos("horizon", horizon)
    _check_int("num_runs", num_runs)
    dev = torch.device(device)
    z = whitened_noise_data(dataset_size, seed=int(seed) + 1).to(dev)
    gen = seeded_generator(seed, device=dev)
    x = _init_points(surface, init, num_runs, seeded_generator(seed)).to(dev)
    for _ in range(max(1, round(horizon / eta))):
        idx = torch.randint(dataset_size, (num_runs, batch_size), generator=gen, device=dev)
        noise = z[idx].mean(dim=1)
        x = x - eta * (surface.grad(x) + s * noise)
    return x


# ---------------------------------------------------------------------------- study


@dataclass(frozen=True)
class OccupancyRow:
    """Predicted vs simulated basin occupancy at one ``(eta, B)``.

    Attributes:
        method: ``"sde"`` or ``"sgd"``.
        eta: Step size.
        batch_size: Batch size.
        temperature: ``T_eff = eta s^2 / (2B)``.
        barrier_over_t: Smallest (saddle loss - minimum loss) / T (NaN if unknown); large
            means the low-temperature regime where eq. (7) should hold.
        predicted: (K,) eq. (7).
        gibbs: (K,) exact stationary masses (quadrature).
        simulated: (K,) fraction of runs ending in each basin.
        ci_low: (K,) Wilson lower bounds.
        ci_high: (K,) Wilson upper bounds.
        agrees: Every predicted probability lies inside its interval.
        gibbs_agrees: Every Gibbs mass lies inside its interval.
        init_memory: With ``init="minima"``: largest difference, over basins and pairs of
            starting basins, between the final occupancies of runs started in different
            minima (0: the initial basin is forgotten; 1: frozen). NaN for other inits.
        mixed: ``init_memory`` is within 3 standard errors of 0 (the runs forgot where
            they started, a necessary condition for stationarity); False when unknown.
        verdict: ``"not mixed"`` when runs started in the minima did not mix (no
            stationary prediction can be judged), else ``"agrees"`` or ``"disagrees"``
            (eq. (7) inside / outside the intervals; mixing unchecked for other inits).
    """

    method: str
    eta: float
    batch_size: int
    temperature: float
    barrier_over_t: float
    predicted: np.ndarray
    gibbs: np.ndarray
    simulated: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    agrees: bool
    gibbs_agrees: bool
    init_memory: float
    mixed: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            out[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


@dataclass(frozen=True)
class OccupancyStudy:
    """Basin occupancy across ``eta / B`` settings.

    Attributes:
        basins: The surface's minima.
        rows: One :class:`OccupancyRow` per setting.
        settings: Surface description, noise scale, horizon, runs, seed, confidence.
    """

    basins: tuple[Basin, ...]
    rows: tuple[OccupancyRow, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"basins": [b.to_dict() for b in self.basins], "rows": [r.to_dict() for r in self.rows], "settings": dict(self.settings)}


def _init_memory(labels: np.ndarray, k: int, num_runs: int) -> tuple[float, bool]:
    """Largest occupancy difference between groups of runs started in different minima."""
    start = np.arange(num_runs) % k
    occ = np.stack([np.bincount(labels[start == g], minlength=k) / max(1, int(np.sum(start == g))) for g in range(k)])
    sizes = np.array([int(np.sum(start == g)) for g in range(k)])
    pooled = np.bincount(labels, minlength=k) / num_runs
    worst, mixed = 0.0, True
    for g in range(k):
        for h in range(g + 1, k):
            diff = np.abs(occ[g] - occ[h])
            se = np.sqrt(pooled * (1 - pooled) * (1 / sizes[g] + 1 / sizes[h]))
            worst = max(worst, float(diff.max()))
            mixed = mixed and bool(np.all(diff <= 3 * se + 1e-12))
    return worst, mixed


def occupancy_study(
    surface: Surface2D,
    settings: Sequence[tuple[float, int]],
    *,
    method: str = "sde",
    noise_scale: float = 1.0,
    dt: float = 0.01,
    horizon: float = 50.0,
    num_runs: int = 2000,
    dataset_size: int = 1000,
    init: str | Tensor = "minima",
    confidence: float = 0.95,
    quadrature_grid: int = 201,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> OccupancyStudy:
    """Simulated basin occupancy vs eq. (7) (and the exact Gibbs masses) across ``(eta, B)``.

    Args:
        surface: A :class:`Surface2D`.
        settings: ``(eta, batch_size)`` pairs.
        method: ``"sde"`` (Euler-Maruyama, step ``dt``) or ``"sgd"`` (step ``eta``).
        noise_scale: ``s`` of ``Sigma = s^2 I``.
        horizon: Simulated time per run.
        num_runs: Runs per setting.
        dataset_size: Size of the synthetic data set (``"sgd"``).
        init: Initial points (see :func:`simulate_sde`).
        confidence: Level of the Wilson intervals.
        quadrature_grid: Grid of :func:`gibbs_occupancy`.
        seed: Base seed (setting ``j`` uses ``seed + j``).
        device: Simulation device.

    Raises:
        ValueError: Unknown ``method`` or empty ``settings``.
    """
    if method not in ("sde", "sgd"):
        raise ValueError(f"method must be 'sde' or 'sgd', got {method!r}")
    if len(settings) == 0:
        raise ValueError("settings must contain at least one (eta, batch_size) pair")
    basins = surface.minima()
    saddles = surface.saddle_losses()
    rows = []
    for j, (eta, bsz) in enumerate(settings):
        T = effective_temperature(eta, bsz, noise_scale)
        if method == "sde":
            final = simulate_sde(surface, eta=eta, batch_size=bsz, noise_scale=noise_scale, dt=dt, horizon=horizon, num_runs=num_runs,
                                 init=init, seed=seed + j, device=device)
        else:
            final = simulate_sgd(surface, eta=eta, batch_size=bsz, noise_scale=noise_scale, dataset_size=dataset_size, horizon=horizon,
                                 num_runs=num_runs, init=init, seed=seed + j, device=device)
        idx = assign_basins(surface, final.cpu(), basins)
        counts = np.bincount(idx.numpy(), minlength=len(basins))
        lo, hi = wilson_bounds(counts, num_runs, confidence)
        pred = predicted_occupancy(basins, T)
        agrees = bool(np.all((pred >= lo) & (pred <= hi)))
        gibbs = gibbs_occupancy(surface, T, grid=quadrature_grid)
        barrier = float(np.min(saddles) - max(b.loss for b in basins)) / T if saddles is not None else math.nan
        if isinstance(init, str) and init == "minima":
            memory, mixed = _init_memory(idx.numpy(), len(basins), num_runs)
        else:
            memory, mixed = math.nan, False
        rows.append(
            OccupancyRow(
                method=method,
                eta=float(eta),
                batch_size=int(bsz),
                temperature=T,
                barrier_over_t=barrier,
                predicted=pred,
                gibbs=gibbs,
                simulated=counts / num_runs,
                ci_low=lo,
                ci_high=hi,
                agrees=agrees,
                gibbs_agrees=bool(np.all((gibbs >= lo) & (gibbs <= hi))),
                init_memory=memory,
                mixed=mixed,
                verdict="not mixed" if (not mixed and not math.isnan(memory)) else ("agrees" if agrees else "disagrees"),
            )
        )
    meta = {
        **surface.describe(),
        "method": method,
        "noise_scale": float(noise_scale),
        "dt": float(dt) if method == "sde" else None,
        "horizon": float(horizon),
        "num_runs": num_runs,
        "dataset_size": dataset_size if method == "sgd" else None,
        "confidence": confidence,
        "seed": seed,
    }
    return OccupancyStudy(basins, tuple(rows), meta)
