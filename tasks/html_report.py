"""The HTML report of a run: its tables and matplotlib figures in one self-contained file.

Every count behind a figure is aggregated by DuckDB (sql/report_*.sql), so
only aggregates (at most classes x classes cells per modality pair) reach
Python and the report costs about the same for a thousand items as for a
million. Figures are PNGs embedded as data URIs, and the page's
Content-Security-Policy forbids any fetch: the file opens offline and can be
mailed or archived as it is.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps, rcParams
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure as MplFigure
from matplotlib.font_manager import FontProperties, findfont, get_font
from matplotlib.ft2font import LoadFlags
from matplotlib.image import AxesImage
from matplotlib.path import Path as MplPath
from matplotlib.textpath import TextPath
from matplotlib.transforms import Affine2D, Transform, blended_transform_factory

from tasks import store
from tasks.staging import replacing
from tasks.report import (CHANGE_HEADERS, DRIFT_HEADERS, DRIFT_NOTE, OLD_ISSUES_NOTE, PARENT_METRICS_NOTE,
                          calibration_words, change_rows, change_sentences, class_reliability, collapsed_fits,
                          drift_cells, drift_skipped, issue_cells, issue_columns, metric_cell, n_parents,
                          night_scope, no_changes, no_gold,
                          no_metrics, parent_confidence_line, parent_shares_note, percent, rejected_rows,
                          reliability_left_out, reliability_sentence, reliability_table, run_row, shown_classes,
                          shown_parents, signed, stability_scope, status_meaning)

# Beyond this many classes a heatmap's tick labels no longer fit: show the top classes by items.
MAX_HEATMAP_CLASSES = 40
# Distinct colours for the stacked bars: tab20 and Dark2 without their greys (25); the rest is one grey "other".
BAR_COLOURS = [c for i, c in enumerate(colormaps["tab20"].colors) if i not in (14, 15)] + list(
    colormaps["Dark2"].colors[:7])
OTHER_COLOUR = "#9e9e9e"
# Counts are written in the cells of heatmaps this small, at this size in points.
ANNOTATE_UP_TO = 15
CELL_FONT_SIZE = 7
# every character compact() writes
CELL_CHARACTERS = "0123456789.kM-"
TOP_ISSUES = 25
DPI = 100
# zlib level of the PNGs: a third faster to encode than PIL's default 6, and no larger on these flat colours
PNG_COMPRESS_LEVEL = 3
METHODS = ("base", "pairwise", "refined")
# Inches of heatmap panels side by side, at most: wider figures are scaled down by the page, and their
# tick labels with them.
HEATMAPS_WIDTH = 11.2
# Inches: blank around a figure's content, between heatmap panels, and before a heatmap's colour bar.
MARGIN = 0.1
PANEL_GAP = 0.12
COLOURBAR_GAP = 0.15
JOINT = "joint"
# Characters of a name a figure shows at most, "…" last: one long class name sized every heatmap to itself. The
# tables keep the full names: they wrap.
NAME_LENGTH = 40

Cells = Mapping[tuple[str, str], int]  # (row label, column label) -> items


@dataclass(frozen=True)
class Figure:
    """One rendered figure, kept as PNG so the page and the Prefect artifact embed the same bytes."""

    title: str
    caption: str
    png: bytes

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class RunReport:
    """The page, and the figures worth showing where only a few fit (the Prefect UI)."""

    run_id: str
    html: str
    main_figures: tuple[Figure, ...]


@dataclass(frozen=True)
class _Section:
    anchor: str
    title: str
    body: str


# ---------------------------------------------------------------- reading (aggregates only)


def _confusions(db: str | Path, run_id: str) -> dict[tuple[str, str], dict[str, Counter]]:
    """(modality_a, modality_b) -> method -> {(ref, pred): items}, methods in METHODS order; modality_b may be
    'gold', and modality_a 'joint' (the joint label, method 'refined' only)."""
    out: dict[tuple[str, str], dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for row in store.query(db, "report_confusion", {"run_id": run_id}).to_pylist():
        out[row["modality_a"], row["modality_b"]][row["method"]][row["ref"], row["pred"]] += row["n"]
    return {pair: {m: methods[m] for m in METHODS if m in methods} for pair, methods in out.items()}


def _class_items(shares: list[dict], confusions: Mapping[tuple[str, str], dict[str, Counter]]) -> Counter:
    """Items per class over every modality, method and the gold label: what 'top classes' ranks by."""
    items: Counter = Counter()
    for row in shares:
        items[row["class"]] += row["n_items"]
    for (_, modality_b), methods in confusions.items():
        if modality_b == "gold":
            for (ref, _), n in next(iter(methods.values())).items():
                items[ref] += n
    return items


# ---------------------------------------------------------------- figures (pure: data in, PNG out)


def _png(fig: MplFigure) -> bytes:
    """The figure as PNG, drawn once: its layout already fits its content, so no tight crop (a second draw)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return buffer.getvalue()


def _heatmap_side(n_classes: int, largest: float) -> float:
    """Inches per heatmap panel: cells of about 0.3 in, but no panel so large the page must scale it down."""
    return float(np.clip(0.3 * n_classes, 3.0, largest))


def _tick_size(n_classes: int) -> float:
    return 9.0 if n_classes <= 16 else 8.0 if n_classes <= 26 else 6.5


def compact(value: float) -> str:
    """A count short enough for a heatmap cell: 950, 9.5k, 95k, 1.2M."""
    if abs(value) < 999.5:
        return f"{value:.0f}"
    for scale, unit in ((1e3, "k"), (1e6, "M")):
        scaled = value / scale
        if abs(scaled) < 9.95:
            return f"{scaled:.1f}{unit}"
        if abs(scaled) < 999.5:
            return f"{scaled:.0f}{unit}"
    return f"{value / 1e6:.0f}M"


def _literal(text: str) -> str:
    """``text`` for matplotlib to draw as it is: with no unescaped "$" it is not parsed as mathtext (a class
    "$5 - $10" was drawn as math, and "$$" failed the whole report), and each "\\$" is drawn as "$". A
    character that prints as nothing (a tab, a newline, an escape) is written as \\uXXXX, as the terminal
    report writes it: the font has no glyph for it, so a class "bread<TAB>loaf" was drawn with an empty box
    and the run's console showed matplotlib's "Glyph 9 missing from font(s)" warning."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text).replace("$", r"\$")


def _cut(text: str) -> str:
    """``text`` in at most NAME_LENGTH characters, "…" last when cut."""
    return text if len(text) <= NAME_LENGTH else text[: NAME_LENGTH - 1] + "…"


def _figure_names(names: Sequence[str]) -> list[str]:
    """The names as a figure shows them: cut (``_cut``), yet as distinct as they are. Names that cut the same
    keep their ends as well (start…end), and if those match too, a number."""
    shown = [_cut(name) for name in names]
    clashes = Counter(shown)
    half = NAME_LENGTH // 2
    shown = [name[: half - 1] + "…" + name[-half:] if clashes[cut] > 1 and cut != name else cut
             for name, cut in zip(names, shown, strict=True)]
    clashes, taken, number = Counter(shown), set(shown), 0
    for k, name in enumerate(names):
        if clashes[shown[k]] > 1 and shown[k] != name:
            while shown[k] in taken:
                number += 1
                tag = f"… #{number}"
                shown[k] = name[: NAME_LENGTH - len(tag)] + tag
            taken.add(shown[k])
    return shown


def _draw_outlines(ax: Axes, paths: Sequence[MplPath], offsets: Any, offset_transform: Transform, colours: Any,
                   *, clip: bool = True) -> None:
    """Texts laid out as outlines in points, each drawn at its offset: one artist for all of them, kept out of
    the layout."""
    ax.add_collection(PathCollection(paths, offsets=offsets, offset_transform=offset_transform,
                                     transform=Affine2D().scale(1 / 72) + ax.figure.dpi_scale_trans,
                                     facecolors=colours, edgecolors="none", clip_on=clip, in_layout=False),
                      autolim=False)


@functools.cache
def _digit_middle(size: float) -> float:
    """Height in points of the middle of the digits above the baseline: texts are centred on it."""
    zero = TextPath((0, 0), "0", prop=FontProperties(size=size)).vertices[:, 1]
    return (zero.min() + zero.max()) / 2


@functools.cache
def _cell_glyphs() -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Outline (vertices, codes) and advance in points of each character of a cell count: laid out once, as
    a Text per cell costs about a millisecond to lay out and draw."""
    font_properties = FontProperties(size=CELL_FONT_SIZE)
    font = get_font(findfont(font_properties))
    glyphs = {}
    for character in CELL_CHARACTERS:
        outline = TextPath((0, 0), character, prop=font_properties)
        advance = font.load_char(ord(character), flags=LoadFlags.NO_SCALE).horiAdvance / font.units_per_EM
        glyphs[character] = (outline.vertices, outline.codes, advance * CELL_FONT_SIZE)
    return glyphs


def _cell_path(text: str) -> MplPath:
    """A cell's count as one outline in points, centred on (0, 0)."""
    glyphs = _cell_glyphs()
    vertices, codes, x = [], [], 0.0
    for character in text:
        outline, outline_codes, advance = glyphs[character]
        vertices.append(outline + (x, 0.0))
        codes.append(outline_codes)
        x += advance
    return MplPath(np.concatenate(vertices) - (x / 2, _digit_middle(CELL_FONT_SIZE)), np.concatenate(codes))


def _annotate(ax: Axes, values: np.ndarray, colour_by: np.ndarray, threshold: float) -> None:
    """Write each cell's value, white on dark cells."""
    rows, columns = np.nonzero(np.isfinite(values) & (values != 0))
    colours = np.where(colour_by[rows, columns] > threshold, "white", "black")
    _draw_outlines(ax, [_cell_path(compact(v)) for v in values[rows, columns]], np.column_stack([columns, rows]),
                   ax.transData, colours)


@functools.lru_cache(maxsize=1024)
def _name_outline(name: str, size: float) -> MplPath:
    """A class name as an outline in points, ending at x = 0 and centred on y = 0 at mid cap height: laid out
    once per name and size, however many panels and figures of the report name it."""
    outline = TextPath((0, 0), _literal(name), prop=FontProperties(size=size))
    # control points bound the outline: close enough, where exact extents cost a millisecond a name
    return MplPath(outline.vertices - (outline.vertices[:, 0].max(), _digit_middle(size)), outline.codes)


def _name_cells(ax: Axes, names: Sequence[str], *, rows: bool) -> float:
    """Name the rows (left of the axes) or the columns (under it, reading upwards) with one collection of
    outlines: tick labels cost a Tick and a Text each, half a 3-panel figure's time. Returns the names'
    depth in inches, for the layout."""
    size = _tick_size(len(names))
    outlines = [_name_outline(name, size) for name in names]
    gap = rcParams["xtick.major.pad"]
    cells = range(len(names))
    if rows:
        paths = [MplPath(o.vertices - (gap, 0), o.codes) for o in outlines]
        offsets, transform = [(0, i) for i in cells], blended_transform_factory(ax.transAxes, ax.transData)
    else:  # turned a quarter left: the name's end sits under the column
        paths = [MplPath(o.vertices[:, ::-1] * (-1, 1) - (0, gap), o.codes) for o in outlines]
        offsets, transform = [(j, 0) for j in cells], blended_transform_factory(ax.transData, ax.transAxes)
    _draw_outlines(ax, paths, offsets, transform, rcParams["text.color"], clip=False)
    return (gap + max((-o.vertices[:, 0].min() for o in outlines), default=0)) / 72


def _heatmap_panels(titles: Sequence[str], classes: Sequence[str]) -> tuple[MplFigure, list[Axes], float]:
    """A figure with one heatmap axes per title, its columns named, and the rows named on the first panel;
    `_heatmap_png` places them. Also returns the names' depth in inches."""
    fig = MplFigure(dpi=DPI)
    axes, names = [], _figure_names(classes)
    for k, title in enumerate(titles):
        ax = fig.add_axes((0, 0, 1, 1), xticks=[], yticks=[])
        depth = _name_cells(ax, names, rows=False)
        if k == 0:  # every panel has the same rows: named once, on the left
            _name_cells(ax, names, rows=True)
        ax.set_title(_literal(_cut(title)), fontsize=11)
        axes.append(ax)
    return fig, axes, depth


def _heatmap_png(fig: MplFigure, axes: Sequence[Axes], image: AxesImage, colour_label: str, side: float,
                 names: float) -> bytes:
    """Add the colour bar, then place square panels of ``side`` inches in a row with just the room their texts
    take (``names``: the class names' depth in inches), measured once: one draw, where constrained layout and
    a tight crop laid every text out several times."""
    n = len(axes)
    colourbar = fig.colorbar(image, cax=fig.add_axes((0, 0, 1, 1)))
    colourbar.set_label(colour_label, fontsize=9)
    renderer = FigureCanvasAgg(fig).get_renderer()

    def inches(texts: Iterable[Any], along: str) -> float:
        return max((getattr(t.get_window_extent(renderer), along) for t in texts if t.get_text()), default=0) / DPI

    first, bar = axes[0], colourbar.ax
    label_pad = rcParams["axes.labelpad"] / 72
    left = MARGIN + inches([first.yaxis.label], "width") + label_pad + names
    bottom = MARGIN + inches([first.xaxis.label], "height") + label_pad + names
    top = MARGIN + inches([first.title], "height") + rcParams["axes.titlepad"] / 72
    bar_width = 0.8 * side / 20
    right = (COLOURBAR_GAP + bar_width + (rcParams["ytick.major.size"] + rcParams["ytick.major.pad"]) / 72
             + inches(bar.get_yticklabels(), "width") + label_pad + inches([bar.yaxis.label], "width") + MARGIN)
    width, height = left + n * side + (n - 1) * PANEL_GAP + right, bottom + side + top
    fig.set_size_inches(width, height)
    for k, ax in enumerate(axes):
        ax.set_position(((left + k * (side + PANEL_GAP)) / width, bottom / height, side / width, side / height))
        ax.xaxis.set_label_coords(0.5, -(names + label_pad) / side)
    first.yaxis.set_label_coords(-(names + label_pad) / side, 0.5)
    bar.set_position(((left + n * side + (n - 1) * PANEL_GAP + COLOURBAR_GAP) / width,
                      (bottom + 0.1 * side) / height, bar_width / width, 0.8 * side / height))
    return _png(fig)


def confusion_shares(cells: Cells, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Counts and row shares on the shown classes; a row's share counts all its items, shown or not."""
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes)))
    totals = np.zeros(len(classes))
    for (ref, pred), n in cells.items():
        if ref in index:
            totals[index[ref]] += n
            if pred in index:
                counts[index[ref], index[pred]] += n
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(totals[:, None] > 0, counts / totals[:, None], np.nan)
    return counts, shares


def confusion_figure(panels: Mapping[str, Cells], classes: Sequence[str], *, rows: str, columns: str) -> bytes:
    """One heatmap per method, side by side on a shared colour scale (share of the row's items)."""
    fig, axes, names = _heatmap_panels(list(panels), classes)
    cmap = colormaps["Blues"].with_extremes(bad="#f4f4f4")
    for ax, cells in zip(axes, panels.values(), strict=True):
        counts, shares = confusion_shares(cells, classes)
        image = ax.imshow(np.ma.masked_invalid(shares), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xlabel(f"{_literal(_cut(columns))} label", fontsize=9)
        if len(classes) <= ANNOTATE_UP_TO:
            _annotate(ax, counts, np.nan_to_num(shares), 0.55)
    axes[0].set_ylabel(f"{_literal(_cut(rows))} label", fontsize=9)
    side = _heatmap_side(len(classes), min(5.6, HEATMAPS_WIDTH / len(panels)))
    return _heatmap_png(fig, axes, image, "share of the row's items", side, names)


def mask_size_figure(sizes: Mapping[tuple[str, str], int], classes: Sequence[str], *, modality: str) -> bytes:
    """Kept dimensions per class pair, mirrored; pairs without a mask (never met) stay blank."""
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.full((len(classes), len(classes)), np.nan)
    for (a, b), n_dims in sizes.items():
        if a in index and b in index:
            matrix[index[a], index[b]] = matrix[index[b], index[a]] = n_dims
    fig, (ax,), names = _heatmap_panels([modality], classes)
    cmap = colormaps["viridis"].with_extremes(bad="#f4f4f4")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, interpolation="nearest")
    if len(classes) <= ANNOTATE_UP_TO and np.isfinite(matrix).any():
        low, high = np.nanmin(matrix), np.nanmax(matrix)
        _annotate(ax, matrix, (high - np.nan_to_num(matrix, nan=high)) / max(high - low, 1), 0.5)
    return _heatmap_png(fig, [ax], image, "kept dimensions", _heatmap_side(len(classes), 5.2), names)


def class_share_figure(bars: Mapping[str, Mapping[str, float]], classes: Sequence[str]) -> bytes:
    """Stacked horizontal bars of class shares, one bar per modality x method (and gold).

    ``classes`` get their own colours, in that order; every other class is
    summed into one grey 'other' segment at the end.
    """
    width = 11.5
    labels = list(bars)
    fig = MplFigure(figsize=(width + 1.6, 0.42 * len(labels) + 1.6), layout="constrained")
    fig.get_layout_engine().set(w_pad=MARGIN, h_pad=MARGIN)  # the blank a tight crop used to leave
    ax = fig.subplots()
    segments = [*classes, "other"] if any(set(b) - set(classes) for b in bars.values()) else list(classes)
    shares = np.array([[sum(v for c, v in bars[label].items() if c not in classes) if name == "other"
                        else bars[label].get(name, 0.0) for name in segments] for label in labels])
    lefts = np.cumsum(shares, axis=1) - shares
    # one call per class: a call per segment cost a millisecond each
    handles = [ax.barh(range(len(labels)), shares[:, k], left=lefts[:, k], edgecolor="white", linewidth=0.5,
                       color=OTHER_COLOUR if name == "other" else BAR_COLOURS[k % len(BAR_COLOURS)])
               for k, name in enumerate(segments)]
    # a class's name inside its segment where it fits, centred
    names = _figure_names(segments)
    rows, columns = np.nonzero(shares * width >= 0.075 * np.array([len(name) for name in names]) + 0.15)
    outlines = [_name_outline(names[k], 7) for k in columns]
    _draw_outlines(ax, [MplPath(o.vertices - (o.vertices[:, 0].min() / 2, 0), o.codes) for o in outlines],
                   np.column_stack([lefts[rows, columns] + shares[rows, columns] / 2, rows]), ax.transData,
                   rcParams["text.color"])
    ax.set_yticks(range(len(labels)), [_literal(label) for label in _figure_names(labels)], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.set_xlabel("share of the items", fontsize=9)
    # handles and names given: a legend of the artists' labels would leave out a class named "_x"
    fig.legend(handles, [_literal(name) for name in names], loc="outside lower center",
               ncol=min(len(segments), 8), fontsize=8, frameon=False)
    return _png(fig)


def reliability_figure(points: Mapping[str, Sequence[Mapping[str, Any]]], ece: Mapping[str, float]) -> bytes:
    """Accuracy against mean confidence per bin, one line per modality (the joint label in black), over the
    items per bin: a calibrated confidence lies on the diagonal, and the counts say which points are noise."""
    fig_width, fig_height = 6.4, 5.6
    fig = MplFigure(figsize=(fig_width, fig_height))
    # margins in inches, fixed as its texts are: constrained layout measured them all twice a figure
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1.1), sharex=True, gridspec_kw={
        "left": 0.6 / fig_width, "right": 1 - 0.15 / fig_width, "bottom": 0.47 / fig_height,
        "top": 1 - 0.1 / fig_height, "hspace": 0.07})
    lines = top.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1)
    names = ["perfectly calibrated"]
    width = 0.09 / len(points)
    for k, (modality, bins) in enumerate(points.items()):
        joint = modality == JOINT
        colour = "black" if joint else colormaps["tab10"].colors[k % 10]
        lines += top.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                          markersize=5 if joint else 4, linewidth=2 if joint else 1.3, color=colour)
        names.append(f"{_literal(_cut(modality))} (ECE {ece[modality]:.3f})")
        bottom.bar([(b["bin"] + 0.5) / 10 + (k - (len(points) - 1) / 2) * width for b in bins],
                   [b["n"] for b in bins], width=width, color=colour)
    top.set_xlim(0, 1.015)  # room for the markers of a confidence of 1
    top.set_ylim(0, 1.03)
    top.set_ylabel("share right against gold", fontsize=9)
    top.legend(lines, names, loc="upper left", fontsize=8, frameon=False)  # given: a modality "_x" is shown too
    top.grid(alpha=0.3)
    bottom.set_yscale("log")
    bottom.set_ylabel("items", fontsize=9)
    bottom.set_xlabel("confidence (mean per bin of width 0.1)", fontsize=9)
    bottom.set_xticks(np.linspace(0, 1, 11))
    bottom.grid(alpha=0.3, axis="y")
    return _png(fig)


# ---------------------------------------------------------------- HTML pieces


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if np.isfinite(value) else "–"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """An HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure_html(figure: Figure) -> str:
    return (f'<figure><img src="{figure.data_uri()}" alt="{html.escape(figure.title)}">'
            f"<figcaption><b>{html.escape(figure.title)}.</b> {html.escape(figure.caption)}</figcaption></figure>")


def _figures_html(figures: Sequence[Figure], *, wide: bool) -> str:
    """Wide figures (two panels) get a row each; the others share rows."""
    return f'<div class="figures{" wide" if wide else ""}">' + "".join(_figure_html(f) for f in figures) + "</div>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _left_out(n_left_out: int, limit: int) -> str:
    return (f" Only the {limit} classes with the most items are shown; {n_left_out} others are left out."
            if n_left_out else "")


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 0; }
main { max-width: 1360px; margin: 0 auto; padding: 12px 20px 40px; box-sizing: border-box; }
h1 { font-size: 22px; margin: 8px 0; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
nav a { margin-right: 14px; }
.scroll { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f6f6; }
table.issues td:nth-child(2) { white-space: nowrap; }
table.issues td { font-size: 13px; } table.issues tbody tr:has(td[rowspan]) { border-top: 2px solid #bbb; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; flex: 1 1 0; min-width: min(520px, 100%); max-width: 100%; }
.figures.wide figure { flex-basis: 100%; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; color: #444; max-width: 1100px; }
.note { color: #555; }
"""

# no fetch of any kind: images are data URIs, the style is inline
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _page(title: str, sections: Sequence[_Section]) -> str:
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections)
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><main><h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}</main></body></html>\n")


# ---------------------------------------------------------------- sections


def _summary_section(run: Mapping[str, Any]) -> _Section:
    params = json.loads(run["params"]) if run["params"] else {}
    when = lambda t: f"{t:%Y-%m-%d %H:%M:%S %Z}" if t else None  # noqa: E731
    rows = [("run id", run["run_id"]), ("status", run["status"]), ("items", run["n_items"]),
            ("classes", run["n_classes"]), ("modalities", ", ".join(run["modalities"] or []) or None),
            ("started", when(run["started_at"])), ("finished", when(run["finished_at"]))]
    if run["error"]:
        rows.append(("error", run["error"]))
    rows += [(f"param {key}", json.dumps(value) if isinstance(value, (dict, list)) else str(value))
             for key, value in sorted(params.items()) if value is not None]
    return _Section("run", "Run", _table(["field", "value"], rows))


def _metrics_section(db: str | Path, run_id: str, n_modalities: int, params: Mapping[str, Any]) -> _Section:
    rows = store.query(db, "report_metrics", {"run_id": run_id}).to_pylist()
    if not rows:
        return _Section("metrics", "Agreement and accuracy", _note(no_metrics(n_modalities, params)))
    table = _table(
        ["metric", "modality a", "modality b", *METHODS, "pairwise − base", "refined − pairwise"],
        [(metric_cell(r), r["modality_a"], r["modality_b"], r["base"], r["pairwise"], r["refined"],
          signed(r["pairwise_minus_base"]), signed(r["refined_minus_pairwise"])) for r in rows],
    )
    agreement = any(r["metric"] == "agreement_f1_weighted" for r in rows)  # none with one modality
    note = _note(("agreement_f1_weighted: modality a's labels against modality b's; " if agreement else "")
                 + "gold_*: a modality's labels against the gold label; joint: the one label per item from all its "
                 "modalities (refined only); gold_ece: expected calibration error of the refined confidence "
                 "against gold over 10 bins (lower is better; see Confidence)."
                 + (f" {PARENT_METRICS_NOTE}" if any(r["level"] == "parent" for r in rows) else ""))
    return _Section("metrics", "Agreement and accuracy: base, pairwise, refined", table + note)


def _percent(value: float | None) -> str | None:
    return None if value is None else percent(value)


def _parent_section(db: str | Path, run_id: str, details: str | None) -> list[_Section]:
    """The items' shares by joint parent label (the parents with the most items, as the terminal report shows
    them), and how their confidence was made; nothing when the classes have no parents."""
    rows = store.query(db, "report_parent_shares", {"run_id": run_id}).to_pylist()
    if not rows:
        return []
    # the sentence is numbers and fixed words: only the call it names is marked up (and escaped)
    shown, left_out = shown_parents(rows, n_parents(details), code=lambda text: f"<code>{html.escape(text)}</code>")
    table = _table(["parent", "items", "share", "mean confidence"],
                   [(r["parent"], r["n_items"], _percent(r["share"]), r["mean_confidence"]) for r in shown])
    bands = parent_confidence_line(db, run_id, details)
    return [_Section("parents", "Parent shares", table + (f'<p class="note">{left_out}</p>' if left_out else "")
                     + _note(parent_shares_note(details)) + (_note(bands) if bands else ""))]


def _consensus_section(db: str | Path, run_id: str, n_modalities: int, params: Mapping[str, Any],
                       details: str | None) -> _Section:
    """The statuses a downstream system acts on, how many joint labels are confident enough to accept, and with
    gold labels the classes whose labels are far more confident than right."""
    rows = store.query(db, "report_consensus_status", {"run_id": run_id}).to_pylist()
    if not rows:
        return _Section("consensus", "Consensus labels", _note("No labelled items in this run."))
    gold = any(r["gold_accuracy"] is not None for r in rows)
    gold_column = ["right against gold"] if gold else []

    def right(row: Mapping[str, Any]) -> list[str | None]:
        return [_percent(row["gold_accuracy"])] if gold else []

    statuses = _table(["status", "items", "share", "mean confidence", *gold_column, "meaning"],
                      [(r["status"], r["n_items"], _percent(r["share"]), r["mean_confidence"], *right(r),
                        status_meaning(r["status"], n_modalities)) for r in rows])
    bands = store.query(db, "report_consensus_confidence", {"run_id": run_id}).to_pylist()
    if not bands:
        return _Section("consensus", "Consensus labels", statuses + _note(
            "A run made before the joint label (schema version 3): its labels are votes, with no confidence."))
    confidence = _table(["joint confidence", "items", "share", *gold_column],
                        [(b["band"], b["n_items"], _percent(b["share"]), *right(b)) for b in bands])
    # with one modality no item is 'split': the joint posterior is that modality's own
    note = _note(("One label per item (view consensus_labels), from the joint posterior of all its modalities. "
                  "Accept by confidence (e.g. ≥ 0.9); send 'split' and low-confidence items to review."
                  if n_modalities != 1 else
                  "One label per item (view consensus_labels), from the run's one modality's posterior. "
                  "Accept by confidence (e.g. ≥ 0.9); send low-confidence items to review.")
                 + ("" if gold else f" {no_gold(params)}: the accuracy of the confidence is not known."))
    classes = ""
    if (reliability := class_reliability(db, run_id)) is not None:
        left_out = reliability_left_out(reliability, code=lambda text: f"<code>{text}</code>")
        classes = _note(reliability_sentence(reliability)) + (
            _table(*reliability_table(reliability, details)) if reliability.over else "") + (
            f'<p class="note">{left_out}</p>' if left_out else "")
    return _Section("consensus", "Consensus labels", statuses + confidence + note + classes)


def _rejected_sections(db: str | Path, run_id: str) -> list[_Section]:
    """The rows without a usable embedding: a section only when the run rejected some."""
    rows, sentence = rejected_rows(db, run_id)
    if not rows:
        return []
    return [_Section("rejected", "Rejected rows", _note(sentence) + _table(
        ["modality", "reason", "rows"], [(r["modality"], r["reason"], r["n_rows"]) for r in rows]))]


def _changes_section(db: str | Path, run_id: str, run: Mapping[str, Any]) -> _Section:
    """What the run changed in the catalog's labels (label_changes), and an incremental night's counts."""
    counted = change_rows(db, run_id)
    details = run["details"]
    body = "".join(map(_note, change_sentences(details, run["succeeded_attempts"]))) + (
        _table(CHANGE_HEADERS, counted) if counted else _note(no_changes(details)))
    return _Section("changes", "What changed", body)


def _drift_sections(db: str | Path, run_id: str, details: str | None) -> list[_Section]:
    """The run's drift tests against its model's fit sample, and those it did not run: a section only when the
    run has either (a night)."""
    rows = store.query(db, "report_drift", {"run_id": run_id}).to_pylist()
    skipped = drift_skipped(details)
    if not rows and not skipped:
        return []
    tests = _table(DRIFT_HEADERS, map(drift_cells, rows)) + _note(DRIFT_NOTE) if rows else ""
    return [_Section("drift", "Drift", tests + (_note(skipped) if skipped else ""))]


def _confidence_section(db: str | Path, run_id: str, details: str | None, n_modalities: int,
                        params: Mapping[str, Any]) -> tuple[_Section, Figure | None]:
    """The reliability diagram, when the run has gold labels to check the confidence against."""
    calibration = json.loads(details).get("calibration") if details else None
    how = f" The confidence was {calibration_words(calibration, n_modalities, params)}." if calibration else ""
    how += "".join(f" {line}." for line in collapsed_fits(json.loads(details).get("refinement") if details else None))
    rows = store.query(db, "report_calibration", {"run_id": run_id}).to_pylist()
    if not rows:
        return _Section("confidence", "Confidence", _note(
            f"{no_gold(params)}: the confidence cannot be checked." + how)), None
    points: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        points[row["modality"]].append(row)
    ece = {modality: bins[0]["ece"] for modality, bins in points.items()}
    caption = ("Reliability of the refined confidence: per bin of confidence (width 0.1), the share of the labels "
               "that are right against gold, at the bin's mean confidence; each modality's own label, and the joint "
               "label in black" + (" (with one modality they are the same label and confidence: the black curve "
                                   "hides the other)" if n_modalities == 1 else "")
               + ". On the diagonal, a confidence of p is right a share p of the time. Below: items per "
               "bin (log scale). ECE: the items' mean distance to the diagonal over the bins." + how)
    figure = Figure("Reliability diagram", caption, reliability_figure(points, ece))
    return _Section("confidence", "Confidence", _figures_html([figure], wide=False)), figure


def _confusion_figures(confusions: Mapping[tuple[str, str], dict[str, Counter]], items: Mapping[str, int],
                       *, gold: bool) -> list[Figure]:
    figures = []
    for (modality_a, modality_b), methods in sorted(confusions.items(), key=lambda kv: (kv[0][0] == JOINT, kv[0])):
        if (modality_b == "gold") != gold:
            continue
        cells = [c for counter in methods.values() for cell in counter for c in cell]
        classes, left_out = shown_classes(cells, items, MAX_HEATMAP_CLASSES)
        rows = "gold" if gold else modality_b
        png = confusion_figure(methods, classes, rows=rows, columns=modality_a)
        title = f"{modality_a} against gold" if gold else f"{modality_a} against {modality_b}"
        panels = "one panel per method: " + ", ".join(methods) if len(methods) > 1 else f"method {next(iter(methods))}"
        who = ("the joint label (all the item's modalities together)" if modality_a == JOINT
               else f"{modality_a}'s label")
        caption = (f"Rows: the {rows} label; columns: {who}; {panels}. "
                   "Colour: share of the row's items"
                   + (", numbers: items." if len(classes) <= ANNOTATE_UP_TO else ".")
                   + _left_out(left_out, MAX_HEATMAP_CLASSES))
        figures.append(Figure(title, caption, png))
    return figures


def parent_gold_cells(db: str | Path, run_id: str, details: str | None) -> Counter:
    """(gold class's parent, joint parent label) -> items: the parent level against gold, as agreement_metrics'
    refined_parent joint row counts it (a gold value that names no class is its own parent). Empty without
    parents or gold values. confusion_counts has the leaf level only."""
    parents = json.loads(details or "{}").get("parents")
    cells: Counter = Counter()
    if not parents:
        return cells
    for row in store.query(db, "report_parent_confusion", {"run_id": run_id}).to_pylist():
        cells[parents.get(row["gold"], row["gold"]), row["pred"]] += row["n"]
    return cells


def _parent_gold_figure(db: str | Path, run_id: str, details: str | None) -> Figure | None:
    """The joint parent label against the gold label's parent: at hundreds of leaf classes the leaf heatmaps
    show 40 of them, while the parents, the level a business often acts on, fit whole."""
    cells = parent_gold_cells(db, run_id, details)
    if not cells:
        return None
    items: Counter = Counter()
    for (ref, pred), n in cells.items():
        items[ref] += n
        items[pred] += n
    parents, left_out = shown_classes(items, items, MAX_HEATMAP_CLASSES)
    caption = ("Rows: the gold label's parent (from the classes table); columns: the joint parent label "
               "(consensus_labels.parent_label, the parent whose children's joint probabilities sum highest: it may "
               "differ from the joint label's parent); method refined. Colour: share of the row's items"
               + (", numbers: items." if len(parents) <= ANNOTATE_UP_TO else ".")
               + _left_out(left_out, MAX_HEATMAP_CLASSES).replace("classes", "parents"))
    png = confusion_figure({"refined": cells}, parents, rows="gold parent", columns="joint parent")
    return Figure(f"{JOINT} parent against gold", caption, png)


def _shares_figure(shares: list[dict], confusions: Mapping[tuple[str, str], dict[str, Counter]],
                   items: Mapping[str, int]) -> Figure | None:
    bars: dict[str, dict[str, float]] = defaultdict(dict)
    for row in sorted(shares, key=lambda r: (r["modality"], r["method"])):
        bars[f"{row['modality']} · {row['method']}"][row["class"]] = row["share"]
    gold = next((m["base"] for (_, b), m in sorted(confusions.items()) if b == "gold" and "base" in m), None)
    if gold:
        total = sum(gold.values())
        for (ref, _), n in gold.items():
            bars["gold"][ref] = bars["gold"].get(ref, 0.0) + n / total
    if not bars:
        return None
    classes = sorted(items, key=lambda c: (-items[c], c))
    shown = classes if len(classes) <= len(BAR_COLOURS) + 1 else classes[: len(BAR_COLOURS)]
    caption = ("Share of the items per class, for each modality and method"
               + (" and for the gold label" if gold else "")
               + ". A method that piles items into a few classes shows here even when agreement looks good."
               + (f" The {len(shown)} classes with the most items have their own colour; the other "
                  f"{len(classes) - len(shown)} are summed as 'other'." if len(shown) < len(classes) else ""))
    return Figure("Class shares", caption, class_share_figure(bars, shown))


OLD_ISSUE_COLUMNS = ["rank", "item", "given label", "suggested label", "score", "agreeing modalities"]
EVIDENCE_COLUMNS = ["modality", "base label (margin)", "pairwise label (margin)", "given gap", "given h2h"]


def _evidence_cells(evidence: Mapping[str, Any]) -> list[str]:
    """What one modality said about the item, and how hard it spoke against the given label."""
    return [evidence["modality"], f"{evidence['base_label']} ({_fmt(evidence['base_margin'])})",
            f"{evidence['pairwise_label']} ({_fmt(evidence['pairwise_margin'])})",
            _fmt(evidence["given_gap"]), _fmt(evidence["given_h2h"])]


def _old_issue_rows(issue: Mapping[str, Any]) -> str:
    """A run from before schema version 4: one table row per modality of evidence; the item's own cells span
    them, so columns line up."""
    evidence = list(issue["evidence"]) or [None]
    span = f' rowspan="{len(evidence)}"' if len(evidence) > 1 else ""
    item = "".join(f"<td{span}>{html.escape(_fmt(issue[k]))}</td>" for k in
                   ("rank", "item_id", "given_label", "suggested_label", "score", "agreeing_modalities"))
    rows = []
    for k, modality in enumerate(evidence):
        cells = _evidence_cells(modality) if modality else ["–"] * len(EVIDENCE_COLUMNS)
        rows.append("<tr>" + (item if k == 0 else "") + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                    + "</tr>")
    return "".join(rows)


def _issue_row(issue: Mapping[str, Any], columns: Mapping[str, Any]) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in issue_cells(issue, columns)) + "</tr>"


def _issues_section(db: str | Path, run_id: str) -> _Section:
    rows = store.query(db, "report_annotation_issues", {"run_id": run_id, "limit": TOP_ISSUES}).to_pylist()
    title = "Annotation issues"
    if not rows:
        return _Section("issues", title, _note(
            "No annotation issues for this run: it had no gold column, or no item's evidence spoke against its label."))
    top = f"The top {len(rows)} of {rows[0]['n_issues']:,} items whose given (gold) label "
    if rows[0]["p_given"] is None:
        intro = _note(top + "the run's evidence speaks against, by rank. given gap: base cosine of the best class "
                      "minus that of the given label; given h2h: the pairwise label's normalized margin over the "
                      "given label in their own match.")
        headers, body, note = [*OLD_ISSUE_COLUMNS, *EVIDENCE_COLUMNS], map(_old_issue_rows, rows), OLD_ISSUES_NOTE
    else:
        intro = _note(top + "is the least likely to be right, by rank.")
        columns, note = issue_columns(rows)
        headers, body = [h for _, h in columns.values()], (_issue_row(row, columns) for row in rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    table = (f'<div class="scroll"><table class="issues"><thead><tr>{head}</tr></thead>'
             f"<tbody>{''.join(body)}</tbody></table></div>")
    return _Section("issues", title, intro + table + _note(note))


def _mask_figures(db: str | Path, run_id: str, items: Mapping[str, int]) -> list[Figure]:
    by_modality: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    fallbacks: Counter = Counter()
    for row in store.query(db, "report_mask_sizes", {"run_id": run_id}).to_pylist():
        by_modality[row["modality"]][row["class_a"], row["class_b"]] = row["n_dims"]
        fallbacks[row["modality"]] += bool(row["fallback"])
    figures = []
    for modality, sizes in sorted(by_modality.items()):
        classes, left_out = shown_classes([c for pair in sizes for c in pair], items, MAX_HEATMAP_CLASSES)
        values = sorted(sizes.values())
        caption = (f"Dimensions kept by each class pair's mask for {modality} (min {values[0]}, "
                   f"median {values[len(values) // 2]}, max {values[-1]}; {fallbacks[modality]} pairs fell back "
                   "to every dimension). Blank: pairs that never met, so have no mask."
                   + _left_out(left_out, MAX_HEATMAP_CLASSES))
        figures.append(Figure(f"Mask sizes: {modality}", caption, mask_size_figure(sizes, classes, modality=modality)))
    return figures


def _figure_section(anchor: str, title: str, figures: Sequence[Figure], empty: str, *, wide: bool = False) -> _Section:
    return _Section(anchor, title, _figures_html(figures, wide=wide) if figures else _note(empty))


# ---------------------------------------------------------------- the report

# The sections that count only the items the run labelled (on a night, its new and changed ones)
NIGHT_SCOPED = {"metrics", "consensus", "parents", "confidence", "agreement", "gold", "shares", "issues"}


def build_report(db: str | Path, run_id: str) -> RunReport:
    """Read the run's aggregates over one reader, draw the figures and lay out the page."""
    with store.reading(db):
        run = run_row(db, run_id)
        title = f"Pairwise run {run_id}: {run['status']}"
        sections = [_summary_section(run)]
        if run["status"] != "succeeded":
            sections.append(_Section("results", "Results", _note(f"No results: the run is {run['status']}.")))
            return RunReport(run_id, _page(title, sections), ())
        confusions = _confusions(db, run_id)
        shares = store.query(db, "report_class_distribution", {"run_id": run_id}).to_pylist()
        items = _class_items(shares, confusions)
        agreement = _confusion_figures(confusions, items, gold=False)
        against_gold = _confusion_figures(confusions, items, gold=True)
        if parent_figure := _parent_gold_figure(db, run_id, run["details"]):
            against_gold.append(parent_figure)
        share_figure = _shares_figure(shares, confusions, items)
        params = json.loads(run["params"]) if run["params"] else {}
        confidence, reliability = _confidence_section(db, run_id, run["details"], len(run["modalities"] or []),
                                                      params)
        sections += [
            _changes_section(db, run_id, run),
            _metrics_section(db, run_id, len(run["modalities"] or []), params),
            _consensus_section(db, run_id, len(run["modalities"] or []), params, run["details"]),
            *_rejected_sections(db, run_id),
            *_parent_section(db, run_id, run["details"]),
            *_drift_sections(db, run_id, run["details"]),
            confidence,
            _figure_section("agreement", "Modality against modality", agreement,
                            "Only one modality labelled items in this run: nothing to compare.", wide=True),
            _figure_section("gold", "Against the gold label", against_gold, f"{no_gold(params)}.", wide=True),
            _figure_section("shares", "Class shares", [share_figure] if share_figure else [],
                            "No labelled items in this run."),
            _issues_section(db, run_id),
            _figure_section("masks", "Mask sizes per class pair", _mask_figures(db, run_id, items),
                            "No pair masks in this run."),
        ]
        if scope := night_scope(run["details"]):  # a night's figures: its labelled items, not the catalog's
            sections = [_Section(s.anchor, s.title, _note(scope) + s.body) if s.anchor in NIGHT_SCOPED else s
                        for s in sections]
        if kept := stability_scope(run["details"]):  # a refit's labels, which catalog_labels has not all taken
            sections = [_Section(s.anchor, s.title, _note(kept) + s.body) if s.anchor == "consensus" else s
                        for s in sections]
        # three figures at most for the Prefect UI: with gold, the joint label against it (one panel) and the
        # reliability diagram say the most; without, the modalities against each other
        headline = next((f for f in against_gold if f.title == f"{JOINT} against gold"), None) or next(
            iter(against_gold or agreement), None)
        main = tuple(f for f in (headline, reliability, share_figure) if f is not None)
        return RunReport(run_id, _page(title, sections), main)


def write_report(db: str | Path, run_id: str, path: str | Path) -> RunReport:
    """Build the report and write it atomically: a reader never opens half a file."""
    report = build_report(db, run_id)
    with replacing(Path(path)) as partial:
        partial.write_text(report.html, encoding="utf-8")
    return report
