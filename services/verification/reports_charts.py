"""The 督察工作通报's charts as PNG images, drawn server-side with matplotlib (Agg, no display).

Chinese labels need a CJK font, and police machines rarely have one: the ``mplfonts`` package
ships Noto Sans CJK SC, registered with matplotlib here at import.  Without it the charts are
still drawn (the labels as boxes) and a warning is logged once.
"""

from __future__ import annotations

import importlib.util
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib import font_manager
from matplotlib.figure import Figure

from services.verification.reports import ReportContent
from shared.logging import get_logger

log = get_logger(__name__)

FONT_FILES = ("NotoSansCJKsc-Regular.otf", "SimHei.ttf", "SourceHanSerifSC-Regular.otf")
DPI = 150
COLOURS = ("#0F3D86", "#E0892B", "#3C8D5A", "#B23A48", "#6B5CA5", "#2A9DB5", "#8C6D31")


def _bundled_font() -> Path | None:
    spec = importlib.util.find_spec("mplfonts")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "fonts"
    return next((folder / name for name in FONT_FILES if (folder / name).is_file()), None)


def _register_font() -> str | None:
    """The CJK font's family name, registered with matplotlib; None (warned once) when there is none."""
    path = _bundled_font()
    if path is None:
        log.warning("no CJK font found for the reports' charts; Chinese labels will not show")
        return None
    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


FONT_FAMILY = _register_font()


@dataclass(frozen=True)
class Chart:
    caption: str
    png: bytes


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _style() -> dict[str, Any]:
    style: dict[str, Any] = {"axes.unicode_minus": False, "font.size": 9}
    if FONT_FAMILY:
        style["font.family"] = "sans-serif"
        style["font.sans-serif"] = [FONT_FAMILY, "DejaVu Sans"]
    return style


# rc_context sets matplotlib's global settings: two reports drawn at once in two threads would
# restore each other's font mid-drawing.
_DRAWING = threading.Lock()


def draw(content: ReportContent) -> list[Chart]:
    with _DRAWING, matplotlib.rc_context(_style()):  # type: ignore[arg-type]
        return [_volumes(content), _measures(content), _trend(content)]


def _volumes(content: ReportContent) -> Chart:
    groups = content.measures.groups
    names = [g.name for g in groups]
    received = [int(g.counts.get("received", 0)) for g in groups]
    concluded = [int(g.counts.get("concluded", 0)) for g in groups]
    figure = _figure(7.0, 3.6)
    axes = figure.subplots()
    positions = range(len(names))
    axes.bar([p - 0.2 for p in positions], received, width=0.4, label="受理", color=COLOURS[0])
    axes.bar([p + 0.2 for p in positions], concluded, width=0.4, label="办结", color=COLOURS[1])
    axes.set_xticks(list(positions), names, rotation=30, ha="right")
    axes.set_ylabel("件数")
    axes.set_title(f"{content.period.label}各单位受理和办结件数")
    axes.legend()
    axes.grid(axis="y", alpha=0.3)
    return Chart(caption="图1　各单位受理、办结件数", png=_png(figure))


def _measures(content: ReportContent) -> Chart:
    groups = content.measures.groups
    definitions = content.measures.definitions
    rows = (len(definitions) + 1) // 2
    figure = _figure(7.0, 2.0 * max(rows, 1))
    axes_grid = figure.subplots(max(rows, 1), 2, squeeze=False)
    names = [g.name for g in groups]
    for index, definition in enumerate(definitions):
        axes = axes_grid[index // 2][index % 2]
        values = [(g.rates.get(definition.key) or 0.0) * 100 for g in groups]
        axes.bar(range(len(names)), values, color=COLOURS[index % len(COLOURS)])
        axes.set_title(definition.name)
        axes.set_ylim(0, 105)
        axes.set_xticks(list(range(len(names))), names, rotation=45, ha="right", fontsize=7)
        axes.set_ylabel("%")
        axes.grid(axis="y", alpha=0.3)
    for index in range(len(definitions), rows * 2):
        axes_grid[index // 2][index % 2].set_visible(False)
    return Chart(caption="图2　各单位考核指标（%）", png=_png(figure))


def _trend(content: ReportContent) -> Chart:
    labels = [label for label, _, _ in content.trend]
    figure = _figure(7.0, 3.2)
    axes = figure.subplots()
    axes.plot(labels, [r for _, r, _ in content.trend], marker="o", label="受理", color=COLOURS[0])
    axes.plot(labels, [c for _, _, c in content.trend], marker="s", label="办结", color=COLOURS[1])
    axes.set_title(f"{content.period.year}年各月受理和办结件数")
    axes.set_ylabel("件数")
    axes.legend()
    axes.grid(alpha=0.3)
    return Chart(caption=f"图3　{content.period.year}年各月受理、办结趋势", png=_png(figure))
