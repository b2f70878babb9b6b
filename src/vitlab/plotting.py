"""Pictures made in memory: a matplotlib figure on its own Agg canvas (no pyplot state, no
GUI, nothing to close) and its PNG bytes, which the callers write atomically
(``vitlab.files``). Every picture of vitlab (curves, comparisons, studies, analyses) is
drawn this way.

Text that may hold class names is drawn inside ``fonts()``: a list of font families with
matplotlib's per-glyph fallback (matplotlib >= 3.6), so that names in Cyrillic, Greek,
Chinese, Japanese, Korean, Arabic, Hebrew, ... render wherever a font that has their
glyphs is installed."""

from __future__ import annotations

import contextlib
import functools
import io
from typing import Iterator

# Font families in order of preference; each glyph is drawn with the first one that has it.
# DejaVu Sans (matplotlib's default, shipped with it) comes first, so Latin, Greek and Cyrillic
# text looks the same on every machine; the others add the scripts it lacks when installed
# (Debian: fonts-noto-cjk, fonts-wqy-microhei, fonts-droid-fallback, fonts-noto-core).
FONT_FAMILIES = (
    "DejaVu Sans", "Noto Sans",
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK HK", "Noto Sans CJK KR",
    "Source Han Sans", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback",
    "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Devanagari", "Noto Sans Bengali", "Noto Sans Tamil",
    "Noto Sans Thai", "Noto Sans Armenian", "Noto Sans Georgian", "Noto Sans Ethiopic",
)


def font_families() -> list[str]:
    """The families of ``FONT_FAMILIES`` that are installed, in that order (DejaVu Sans at
    least). Fonts installed after matplotlib built its font cache are registered first,
    so a font added with apt is used without deleting that cache."""
    return list(_installed_families())


@functools.cache
def _installed_families() -> tuple[str, ...]:
    from matplotlib import font_manager

    fm = font_manager.fontManager
    known = {f.fname for f in fm.ttflist}
    for path in font_manager.findSystemFonts():
        if path not in known:
            try:
                fm.addfont(path)
            except (OSError, RuntimeError, ValueError):  # a file FreeType cannot read: not ours to fix
                pass
    installed = {f.name for f in fm.ttflist}
    return tuple(f for f in FONT_FAMILIES if f in installed) or ("DejaVu Sans",)


@contextlib.contextmanager
def fonts() -> Iterator[None]:
    """Draw (make and save figures) with ``font_families()``; matplotlib's settings are
    restored afterwards. Text objects take their font when they are made and tick labels
    are made while saving, so wrap both."""
    import matplotlib

    with matplotlib.rc_context({"font.family": font_families()}):
        yield


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
