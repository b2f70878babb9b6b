"""Pictures made in memory: a matplotlib figure on its own Agg canvas (no pyplot state, no
GUI, nothing to close) and its PNG bytes, which the callers write atomically
(``vitlab.files``). Every picture of vitlab (curves, comparisons, studies, analyses) is
drawn this way."""

from __future__ import annotations

import io


def new_figure(**kwargs):
    """A ``matplotlib.figure.Figure`` (``figsize=...``) with an Agg canvas; ``fig.subplots(...)`` for axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
