"""Figures of the stages: Matplotlib figures without pyplot state, written as PNG files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from landscape.io import atomic_path

__all__ = ["new_figure", "write_figures"]

#: Resolution of every stage figure (dots per inch).
DPI = 110


def new_figure(size: tuple[float, float]) -> Any:
    """A Matplotlib ``Figure`` of ``size`` inches on an Agg canvas (no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def write_figures(figures: Mapping[str, Any], directory: Path) -> None:
    """Write each figure atomically as ``directory/<name>.png`` at :data:`DPI`."""
    for name, fig in figures.items():
        with atomic_path(Path(directory) / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
