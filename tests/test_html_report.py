"""The HTML report on a hand-made DuckDB file: its SQL counts, its text, and the page in headless Chromium."""

import html
import io
import json
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tasks import html_report, report, store
from tasks.folders import report_path
from tasks.metric_counts import MetricCounts
from tasks.sql import statement
from test_sql_metrics import item_positions

PAIRWISE = str(Path(sys.executable).with_name("pairwise"))
# a class name that is also HTML: the page must show it as text, never run it
TRICKY = '<img src=x onerror="document.title=1">coat & "co"'
CLASSES = ["bag", "hat", "shoe", TRICKY]
MODALITIES = ["image", "text"]
LONG_ID = "item-" + "x" * 300  # one unbreakable word: the page must still not scroll sideways
FIRST_ISSUE = "item-007"
# annotation_issues as a run of schema version 4 writes them (unordered): each route's evidence, no score
ISSUE = ["run_id", "rank", "item_id", "given_label", "suggested_label", "p_given", "route", "zero_shot_p_given",
         "zero_shot_label", "label_aware_p_given", "label_aware_label", "agreeing_modalities"]
ISSUES = [(2, "item-011", TRICKY, "shoe", 0.04, "both", 0.31, "hat", 0.02, "shoe", 1),
          (1, FIRST_ISSUE, "bag", "shoe", 0.00042, "both", 0.125, "shoe", 0.0008, "shoe", 2),
          (3, LONG_ID, "hat", "bag", 0.2, "zero-shot", 0.2, "bag", None, None, 0)]
# and as a run made before it left them: score and per-modality evidence, no p_given
OLD_ISSUE = ["run_id", "rank", "item_id", "given_label", "suggested_label", "score", "raw_score",
             "agreeing_modalities", "evidence"]
OLD_EVIDENCE = [{"modality": m, "base_label": "hat", "base_margin": 0.1, "pairwise_label": "shoe",
                 "pairwise_margin": 0.3, "given_gap": 0.2, "given_h2h": 0.4} for m in MODALITIES]
OLD_ISSUES = [(2, "item-011", TRICKY, "shoe", 1.5, 0.9, 2, OLD_EVIDENCE),
              (1, FIRST_ISSUE, "bag", "shoe", 2.25, 1.2, 2, OLD_EVIDENCE)]


def _labels(rng: np.random.Generator, n_items: int, *, gold: bool, refined: bool = True,
            classes: list[str] = CLASSES, modalities: list[str] = MODALITIES) -> list[tuple]:
    """item_labels rows: each modality keeps the gold label with a fixed chance, pairwise more often than base,
    refined more often still, with a confidence in [0.3, 1) (a run from before the refinement has none)."""
    rows = []
    for i in range(n_items):
        truth = classes[i % len(classes)]
        item = LONG_ID if i == 0 else f"item-{i:03d}"
        for modality in modalities:
            base = truth if rng.random() < 0.6 else classes[rng.integers(len(classes))]
            pairwise = truth if rng.random() < 0.85 else classes[rng.integers(len(classes))]
            better = truth if rng.random() < 0.9 else classes[rng.integers(len(classes))]
            confidence = float(np.float32(0.3 + 0.7 * rng.random()))
            rows.append((item, modality, base, float(rng.random()), 0.1, pairwise, 0.2, truth if gold else None,
                         better if refined else None, confidence if refined else None))
    return rows


def _joint(labels: list[tuple]) -> list[tuple]:
    """joint_labels rows: the more confident modality's refined label (a stand-in for the joint posterior)."""
    by_item: dict[str, list[tuple]] = {}
    for row in labels:
        by_item.setdefault(row[0], []).append(row)
    rows = []
    for item, modalities in by_item.items():
        best = max(modalities, key=lambda r: r[9])
        agreeing = sum(r[8] == best[8] for r in modalities)
        status = "agreed" if agreeing == len(modalities) else "split"
        rows.append((item, best[8], best[9], status, agreeing, len(modalities), best[7]))
    return rows


JOINT_COLUMNS = "(run_id, item_id, label, confidence, status, agreeing_modalities, n_modalities, gold_class)"


def _insert_run(con, run_id: str, status: str, started: str, *, gold: bool, n_items: int, seed: int,
                old: bool = False, classes: list[str] = CLASSES, modalities: list[str] = MODALITIES,
                params: dict | None = None, details: dict | None = None) -> list[tuple]:
    """A run as the flow commits it; ``old``: as the migration to schema version 3 leaves a run made before it.
    ``params`` and ``details``: more of runs.params and runs.details."""
    con.execute(
        "INSERT INTO runs (run_id, status, started_at, finished_at, params, n_items, n_classes, modalities, error, "
        "details) VALUES (?, ?, ?::TIMESTAMPTZ, ?::TIMESTAMPTZ + INTERVAL 5 SECOND, ?, ?, ?, ?, ?, ?)",
        [run_id, status, started, started,
         json.dumps({"seed": seed, "strategy": "tourney", "cutoff": 1.05, **(params or {})}),
         n_items, len(classes), modalities, "boom" if status == "failed" else None,
         None if old or status != "succeeded" else json.dumps({"changes": {}, **(details or {})})],  # the commit
        # counts its changes
    )
    if status != "succeeded":
        return []
    labels = _labels(np.random.default_rng(seed), n_items, gold=gold, refined=not old, classes=classes,
                     modalities=modalities)
    con.executemany(
        "INSERT INTO item_labels (run_id, item_id, modality, base_class, base_score, base_margin, pairwise_class, "
        "pairwise_margin, gold_class, refined_class, refined_confidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(run_id, *row) for row in labels],
    )
    if old:  # the votes of the migration: only their statuses matter here
        con.executemany(f"INSERT INTO joint_labels {JOINT_COLUMNS} VALUES (?, ?, ?, NULL, ?, 1, 2, ?)",
                        [(run_id, row[0], row[5], "majority" if k % 3 else "by_margin", row[7])
                         for k, row in enumerate(labels[::2])])
    else:
        con.executemany(f"INSERT INTO joint_labels {JOINT_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(run_id, *row) for row in _joint(labels)])
    for modality in modalities:
        for a in range(len(classes)):
            for b in range(a + 1, len(classes)):
                if (a, b) != (0, 1):  # bag and hat never met: no mask
                    con.execute("INSERT INTO pair_masks VALUES (?, ?, ?, ?, ?, [1, 2], 10, 10, false)",
                                [run_id, modality, classes[a], classes[b], 10 * a + b])
    # the confusion counts, as the labelling tasks count them and the agreement-metrics step stages them
    counts = MetricCounts(classes)
    rows = con.sql("SELECT * FROM item_labels WHERE run_id = ?", params=[run_id]).to_arrow_table()
    counts.add(rows, item_positions(rows), con.sql("SELECT * FROM joint_labels WHERE run_id = ?", params=[run_id]).to_arrow_table())
    confusion, calibration = (table.drop_columns("level") for table in counts.tables())
    con.execute("INSERT INTO confusion_counts SELECT ?, * FROM confusion", [run_id])
    for method, value in (("base", 0.5), ("pairwise", 0.8), ("refined", None if old else 0.85)):
        if value is not None:
            con.execute("INSERT INTO agreement_metrics VALUES (?, ?, 'agreement_f1_weighted', 'image', 'text', ?)",
                        [run_id, method, value])
    if gold and not old:  # the calibration sums and gold_ece, as the agreement-metrics step stages them
        con.execute(f"INSERT INTO calibration_bins {statement('metrics_calibration_total')}", {"run_id": run_id})
        con.execute(f"INSERT INTO agreement_metrics {statement('metrics_ece')}", {"run_id": run_id})
    if gold:
        con.executemany(f"INSERT INTO annotation_issues ({', '.join(OLD_ISSUE if old else ISSUE)}) "
                        f"VALUES ({', '.join('?' * len(OLD_ISSUE if old else ISSUE))})",
                        [(run_id, *row) for row in (OLD_ISSUES if old else ISSUES)])
    return labels


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A file with a succeeded run with gold (r-main), an older one without (r-nogold), one made before the
    refinement (r-old), and a later failed one."""
    db = tmp_path_factory.mktemp("report") / "out.duckdb"
    with store.connect(db) as con:
        _insert_run(con, "r-old", "succeeded", "2025-12-31 00:00:00+00", gold=True, n_items=20, seed=4, old=True)
        _insert_run(con, "r-nogold", "succeeded", "2026-01-01 00:00:00+00", gold=False, n_items=20, seed=1)
        labels = _insert_run(con, "r-main", "succeeded", "2026-01-02 00:00:00+00", gold=True, n_items=60, seed=2)
        _insert_run(con, "r-failed", "failed", "2026-01-03 00:00:00+00", gold=True, n_items=60, seed=3)
    return db, labels


def test_confusion_counts_match_a_count_by_hand(made):
    db, labels = made
    counted = Counter()
    by_item = {}
    for item, modality, base, _, _, pairwise, _, gold, refined, _ in labels:
        by_item.setdefault(item, {})[modality] = {"base": base, "pairwise": pairwise, "refined": refined}
        for method, label in (("base", base), ("pairwise", pairwise), ("refined", refined)):
            counted[method, modality, "gold", label, gold] += 1
    for modalities in by_item.values():
        for method in ("base", "pairwise", "refined"):
            counted[method, "image", "text", modalities["image"][method], modalities["text"][method]] += 1
    for _, label, _, _, _, _, gold in _joint(labels):
        counted["refined", "joint", "gold", label, gold] += 1
    rows = store.query(db, "report_confusion", {"run_id": "r-main"}).to_pylist()
    from_sql = Counter({(r["method"], r["modality_a"], r["modality_b"], r["pred"], r["ref"]): r["n"] for r in rows})
    assert from_sql == counted


def test_confusion_shares_count_every_item_of_a_row_even_when_some_columns_are_hidden():
    counts, shares = html_report.confusion_shares({("a", "a"): 3, ("a", "b"): 1, ("a", "z"): 4}, ["a", "b"])
    assert counts.tolist() == [[3, 1], [0, 0]]
    assert shares[0].tolist() == [3 / 8, 1 / 8] and np.isnan(shares[1]).all()


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (950, "950"), (999.6, "1.0k"), (9_499, "9.5k"), (9_960, "10k"), (34_322, "34k"),
    (999_499, "999k"), (999_999, "1.0M"), (12_500_000, "12M"),
])
def test_cell_counts_are_compact_enough_for_a_cell(value, text):
    assert html_report.compact(value) == text


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def _heatmap(n_classes: int, scale: int, names: list[str] | None = None) -> np.ndarray:
    """A 2-panel confusion figure's pixels; ``scale`` multiplies every count, so the colours stay the same."""
    classes = names or [f"c{i}" for i in range(n_classes)]
    cells = {(a, b): scale * (50 if a == b else 1 + i + j) for i, a in enumerate(classes)
             for j, b in enumerate(classes)}
    return _pixels(html_report.confusion_figure({"base": cells, "refined": cells}, classes, rows="gold",
                                                columns="image"))


def test_the_cells_show_their_counts_up_to_the_annotation_limit():
    small = html_report.ANNOTATE_UP_TO
    # the same shares, other counts: only the numbers in the cells can differ
    assert (_heatmap(small, 1) != _heatmap(small, 10)).any()
    assert (_heatmap(small + 1, 1) == _heatmap(small + 1, 10)).all()


def test_a_heatmap_makes_room_for_its_names_and_cuts_none_at_the_edge():
    short = _heatmap(3, 1, ["a", "b", "c"])
    long = _heatmap(3, 1, ["a", "b", "a class name of forty characters or more"])
    assert long.shape[0] > short.shape[0] + 150 and long.shape[1] > short.shape[1] + 150
    for pixels in (short, long):
        ink = np.argwhere(pixels < 200)
        margin = html_report.MARGIN * html_report.DPI
        assert ink.min(axis=0).min() >= margin - 1  # blank all round ...
        assert ink.min(axis=0).max() <= margin + 5  # ... and not much more: the names and the title reach it
        assert (np.array(pixels.shape) - 1 - ink.max(axis=0)).min() >= margin - 1


def test_a_long_class_name_is_cut_so_the_heatmap_stays_its_size(monkeypatch):
    """A 500-character name sized the figure to itself (5495 px wide, the matrix 6% of it)."""
    long = "x" * 500
    cut = "x" * (html_report.NAME_LENGTH - 1) + "…"
    pixels = _heatmap(3, 1, ["a", "b", long])
    assert pixels.shape[1] < 1200 and (pixels == _heatmap(3, 1, ["a", "b", cut])).all()
    drawn, png = [], html_report._png
    monkeypatch.setattr(html_report, "_png", lambda fig: drawn.append(fig) or png(fig))
    html_report.class_share_figure({"image · base": {"a": 0.5, long: 0.5}}, ["a", long])
    assert [t.get_text() for t in drawn[0].legends[0].get_texts()] == ["a", cut]


def test_names_cut_the_same_are_still_told_apart():
    start, end = "s" * 45, "e" * 30
    names = ["a", start + end + "one", start + end + "two", start + "1" + end, start + "2" + end,
             "z" * 39 + "…", "z" * 60]
    shown = html_report._figure_names(names)
    assert len(set(shown)) == len(names) and max(map(len, shown)) == html_report.NAME_LENGTH
    assert shown[0] == "a" and shown[5] == names[5]  # short names as they are
    assert shown[1].endswith("eone") and shown[2].endswith("etwo") and "…" in shown[1]


# class names that are mathtext to matplotlib, or not shown in its legends ("_x"): each is drawn as it is
MATH_NAMES = ["$5 - $10", "$$", "Price $x^$", "a_b^c", r"\alpha", "_x", "$"]


@pytest.mark.parametrize("name", MATH_NAMES)
def test_a_class_name_is_outlined_as_plain_text(name):
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    outline = html_report._name_outline(name, 9)
    vertices, codes = text_to_path.get_text_path(FontProperties(size=9), name, ismath=False)
    assert outline.codes.tolist() == list(codes)
    assert np.allclose(np.diff(outline.vertices, axis=0), np.diff(vertices, axis=0) * 9 / text_to_path.FONT_SCALE)


def test_a_class_name_with_a_tab_is_outlined_with_its_escape_and_no_missing_glyph():
    """A class "bread<TAB>loaf" (pairwise run takes it) was drawn with an empty box, and matplotlib's "Glyph 9
    missing from font(s)" warning showed on the run's console: it is drawn as the terminal report writes it."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outline = html_report._name_outline("bread\tloaf \x1b$", 9)
    _, codes = text_to_path.get_text_path(FontProperties(size=9), "bread\\u0009loaf \\u001b$", ismath=False)
    assert outline.codes.tolist() == list(codes)
    assert html_report._literal("a\tb $5") == "a\\u0009b \\$5"


def test_names_in_every_figure_are_drawn_as_they_are(tmp_path, monkeypatch):
    from matplotlib.text import Text

    db = tmp_path / "math.duckdb"
    with store.connect(db) as con:
        _insert_run(con, "r-math", "succeeded", "2026-01-02 00:00:00+00", gold=True, n_items=30, seed=2,
                    classes=MATH_NAMES, modalities=["_image", "text"])
    drawn, png = [], html_report._png
    monkeypatch.setattr(html_report, "_png", lambda fig: drawn.append(fig) or png(fig))
    page = html_report.build_report(db, "r-math").html
    assert page.count("<img") == len(drawn) > 0
    texts = {t._preprocess_math(t.get_text()) for fig in drawn for t in fig.findobj(Text) if t.get_text()}
    assert all(text.startswith(r"$\mathdefault{") for text, math in texts if math)  # the log scale's ticks only
    shown = {text for text, math in texts if not math}
    assert set(MATH_NAMES) <= shown  # the class shares' legend
    assert "_image label" in shown and any(text.startswith("_image (ECE ") for text in shown)


def test_a_report_reads_over_one_connection(made, monkeypatch):
    db, _ = made
    connect, opened = store.duckdb.connect, []
    monkeypatch.setattr(store.duckdb, "connect", lambda *args, **kw: opened.append(args) or connect(*args, **kw))
    page = html_report.build_report(db, "r-main").html
    assert len(opened) == 1 and "<img" in page
    store.query(db, "report_run", {"run_id": "r-main"})  # and after it, a query opens its own again
    assert len(opened) == 2


def test_only_the_top_classes_are_shown_past_the_limit():
    items = {f"c{i:02d}": i for i in range(50)}
    shown, left_out = report.shown_classes(items, items, 40)
    assert left_out == 10 and shown == sorted(f"c{i:02d}" for i in range(10, 50))


def test_the_html_parent_shares_are_capped_as_the_terminal_ones_are(tmp_path):
    """200 parents were 200 rows of the HTML report's Parent shares, where the terminal report shows 20 and
    names the query that has them all (93fd8e9): the page now shows the same 20 and says the same."""
    db = tmp_path / "out.duckdb"
    # 250 parents in the classes table, items under 200 of them: p000 has the most, then p001, ...
    parents = {f"c{i:03d}": f"p{i:03d}" for i in range(250)}
    with store.connect(db) as con:
        for run_id, n in (("many", 200), ("few", 20)):
            _insert_run(con, run_id, "succeeded", "2026-01-02 00:00:00+00", gold=False, n_items=600, seed=1,
                        details={"parents": parents})
            items = [r[0] for r in con.execute("SELECT item_id FROM joint_labels WHERE run_id = ? ORDER BY item_id",
                                               [run_id]).fetchall()]
            # item k goes to the parent of the k-th of n shrinking groups: p000 gets the most
            parent = [f"p{min(int((k * k) / 600 * n / 600), n - 1):03d}" for k in range(len(items))]
            con.executemany("UPDATE joint_labels SET parent_label = ?, parent_confidence = 0.5 "
                            "WHERE run_id = ? AND item_id = ?", [(p, run_id, i) for p, i in zip(parent, items, strict=True)])
    terminal = report.render_report(db, "many")
    expected = report.store.query(db, "report_parent_shares", {"run_id": "many"}).to_pylist()
    assert len(expected) == 200
    section = _section(html_report.build_report(db, "many").html, "parents")
    shown = [cells.split("</td>")[0] for cells in section.split("<tr><td>")[1:]]
    assert shown == [r["parent"] for r in expected[:20]]
    assert ('<p class="note">The 20 parents with the most items, of the 200 with items (250 parents); all of them: '
            "the query report_parent_shares.sql (<code>tasks.sql.statement(&quot;report_parent_shares&quot;)</code>)."
            "</p>") in section
    # the terminal report says the same words, the call in backticks
    assert ("The 20 parents with the most items, of the 200 with items (250 parents); all of them: the query "
            'report_parent_shares.sql (`tasks.sql.statement("report_parent_shares")`).') in terminal
    few = _section(html_report.build_report(db, "few").html, "parents")
    assert few.count("<tr><td>") == 20 and "with the most items" not in few


PARENTS = {"bag": "accessories", "hat": "clothing", "shoe": "clothing", TRICKY: "accessories"}
OTHER_PARENT = {"accessories": "clothing", "clothing": "accessories"}


def _insert_run_with_parents(con, *, n_items: int, seed: int) -> None:
    """Run 'p' with gold labels under PARENTS; its joint parent labels are for the test to set."""
    _insert_run(con, "p", "succeeded", "2026-01-02 00:00:00+00", gold=True, n_items=n_items, seed=seed,
                details={"parents": PARENTS})


def test_the_parent_level_against_gold_is_a_heatmap(tmp_path, made):
    """At 330 leaf classes the leaf heatmaps show 40; the parents (38 on taxonomy-nouns), the level a business
    acts on, had no figure: the joint parent label against the gold class's parent is one now, counted as
    refined_parent's joint gold_accuracy counts it (a gold value naming no class is its own parent)."""
    db = tmp_path / "out.duckdb"
    parents, other = PARENTS, OTHER_PARENT
    with store.connect(db) as con:
        _insert_run_with_parents(con, n_items=60, seed=3)
        rows = con.execute("SELECT item_id, label FROM joint_labels WHERE run_id = 'p' ORDER BY item_id").fetchall()
        # the joint label's parent, but every third item the other parent (the sum may pick another parent)
        con.executemany("UPDATE joint_labels SET parent_label = ?, parent_confidence = 0.5 WHERE run_id = 'p' "
                        "AND item_id = ?", [(parents[label] if k % 3 else other[parents[label]], item)
                                            for k, (item, label) in enumerate(rows)])
        expected = Counter((parents.get(gold, gold), parent) for gold, parent in con.execute(
            "SELECT gold_class, parent_label FROM joint_labels WHERE run_id = 'p' AND gold_class IS NOT NULL").fetchall())
        details = con.execute("SELECT details FROM runs WHERE run_id = 'p'").fetchone()[0]
    assert sum(expected.values()) > 0 and len(expected) > 2
    assert html_report.parent_gold_cells(db, "p", details) == expected
    section = _section(html_report.build_report(db, "p").html, "gold")
    assert "joint parent against gold" in section and "Rows: the gold label&#x27;s parent" in section
    assert "numbers: items." in section  # two parents: their counts are written in the cells
    # without parents, no parent figure
    assert "parent against gold" not in _section(html_report.build_report(made[0], "r-main").html, "gold")


def test_the_parent_confidence_bands_are_said_in_both_reports(tmp_path, made):
    """The reports gave the joint label's confidence bands only: on taxonomy-nouns 1.1% of the leaf labels are at
    0.9 or more, while 18.4% of the parent labels are, 92.4% of them right; the parent level is the one a
    business often acts on. Both reports now say the parent labels' bands, right against the gold class's
    parent."""
    db = tmp_path / "out.duckdb"
    parents, other = PARENTS, OTHER_PARENT
    with store.connect(db) as con:
        _insert_run_with_parents(con, n_items=90, seed=4)
        rows = con.execute("SELECT item_id, gold_class FROM joint_labels WHERE run_id = 'p' ORDER BY item_id").fetchall()
        # item k: confidence 0.95, 0.7 or 0.2 by k % 3; its gold class's parent, but every fourth item the other one
        updates = [(parents.get(gold, gold) if k % 4 else other.get(parents.get(gold, gold), "clothing"),
                    (0.95, 0.7, 0.2)[k % 3], item) for k, (item, gold) in enumerate(rows)]
        con.executemany("UPDATE joint_labels SET parent_label = ?, parent_confidence = ? WHERE run_id = 'p' AND "
                        "item_id = ?", updates)
    golds = dict(rows)
    parts = []
    for band, confidence in (("≥ 0.9", 0.95), ("0.5–0.9", 0.7), ("< 0.5", 0.2)):
        inside = [(golds[item], parent) for parent, c, item in updates if c == confidence]
        labelled = [(gold, parent) for gold, parent in inside if gold is not None]
        right = sum(parents.get(gold, gold) == parent for gold, parent in labelled)
        parts.append(f"{band}: {report.percent(len(inside) / len(updates))}, "
                     f"{report.percent(right / len(labelled))} right")
    line = "Parent confidence " + "; ".join(parts) + " (against the gold class's parent)."
    assert "right" in line and line in report.render_report(db, "p")
    assert html.escape(line) in _section(html_report.build_report(db, "p").html, "parents")
    assert "Parent confidence" not in report.render_report(made[0], "r-main")


def test_default_run_is_the_latest_succeeded_one(made):
    db, _ = made
    assert report.latest_run_id(db, succeeded=True) == "r-main"
    failed = html_report.build_report(db, "r-failed")
    assert "No results: the run is failed." in failed.html and "boom" in failed.html
    assert "<img" not in failed.html


def test_a_run_without_gold_says_so_in_one_line(made):
    db, _ = made
    page = html_report.build_report(db, "r-nogold").html
    assert "No gold column in this run." in page
    assert "No annotation issues for this run" in page
    confidence = page[page.index('<section id="confidence">'):]
    confidence = confidence[:confidence.index("</section>")]
    assert confidence.count('<p class="note">') == 1 and "<img" not in confidence
    assert "No gold column in this run: the confidence cannot be checked." in confidence
    text = report.render_report(db, "r-nogold")
    assert "Joint confidence ≥ 0.9: " in text and "right" not in text and "gold accuracy" not in text


def _section(page: str, anchor: str) -> str:
    section = page[page.index(f'<section id="{anchor}">'):]
    return section[:section.index("</section>")]


def test_a_run_with_a_gold_column_but_no_gold_value_says_so_not_that_it_had_none(tmp_path):
    """A night of new items without gold values: the HTML report said "No gold column in this run" three times,
    and the Markdown report said how the confidence was fitted on the gold column alone, as if the night had."""
    db = tmp_path / "out.duckdb"
    with store.connect(db) as con:
        _insert_run(con, "night", "succeeded", "2026-01-02 00:00:00+00", gold=False, n_items=20, seed=1,
                    params={"gold_column": "label", "model": "latest"}, details={"calibration": "gold"})
    page = html_report.build_report(db, "night").html
    assert "No gold column" not in page
    none = "No gold value in this run (its gold column label has none among the items it labelled)"
    assert _section(page, "confidence") == (
        f'<section id="confidence"><h2>Confidence</h2><p class="note">{none}: the confidence cannot be checked. '
        "The confidence was fitted out of fold on the gold column when its model was fitted.</p>")
    assert f"{none}: the accuracy of the confidence is not known." in _section(page, "consensus")
    assert f"{none}." in _section(page, "gold")
    line = next(line for line in report.render_report(db, "night").splitlines() if line.startswith("Joint"))
    # the night fitted nothing: its stored model's full run did
    assert line.endswith(f". Confidence fitted out of fold on the gold column when its model was fitted. {none}: "
                         "the confidence cannot be checked.")


def _one_modality_run(db: Path, run_id: str, *, gold: bool) -> None:
    """A run of a text-only catalog as the flow commits it: no agreement between modalities, every item
    single_modality."""
    with store.connect(db) as con:
        _insert_run(con, run_id, "succeeded", "2026-01-02 00:00:00+00", gold=gold, n_items=20, seed=1,
                    modalities=["text"], params={"gold_column": "label"} if gold else {},
                    details={"calibration": "gold" if gold else "label-free"})
        con.execute("DELETE FROM agreement_metrics WHERE metric = 'agreement_f1_weighted' AND run_id = ?", [run_id])
        con.execute("UPDATE joint_labels SET status = 'single_modality' WHERE run_id = ?", [run_id])


def test_a_one_modality_run_says_why_it_has_no_metrics_and_no_split_items(tmp_path):
    """A text-only catalog without gold: both reports said a bare "No metrics for this run." under "Agreement and
    accuracy", and the HTML report told the user to send 'split' items to review, a status a run of one modality
    never gives; with gold, its metrics note explained agreement_f1_weighted, a metric it does not have."""
    db = tmp_path / "out.duckdb"
    _one_modality_run(db, "text-only", gold=False)
    _one_modality_run(db, "text-gold", gold=True)
    why = ("No metrics for this run: agreement compares two modalities and this run has one; accuracy needs gold "
           "labels. No gold column in this run (--gold-column names one).")
    page = html_report.build_report(db, "text-only").html
    assert why in _section(page, "metrics")
    assert why in report.render_report(db, "text-only")
    consensus = _section(page, "consensus")
    assert "'split'" not in consensus and "send low-confidence items to review" in consensus
    gold_page = html_report.build_report(db, "text-gold").html
    assert "gold_ece" in _section(gold_page, "metrics")
    assert "agreement_f1_weighted" not in _section(gold_page, "metrics")
    assert "'split'" not in _section(gold_page, "consensus")
    # two modalities: as before
    assert report._metrics_table([], 2, {}) == "No metrics for this run."


def test_a_one_modality_reliability_diagram_says_its_two_curves_are_one(tmp_path, made):
    """With one modality the diagram's legend names the modality and the joint label, with the same ECE, but
    shows one curve: the joint's black one is drawn over the other. The caption now says so."""
    db = tmp_path / "out.duckdb"
    _one_modality_run(db, "text-gold", gold=True)
    one = "with one modality they are the same label and confidence"
    assert one in _section(html_report.build_report(db, "text-gold").html, "confidence")
    assert one not in _section(html_report.build_report(made[0], "r-main").html, "confidence")


def test_the_reliability_points_are_the_refined_confidence_against_gold(made):
    db, labels = made
    bins: dict[tuple[str, int], list[tuple[float, bool]]] = {}
    scored = [(m, conf, refined == gold) for _, m, _, _, _, _, _, gold, refined, conf in labels]
    scored += [("joint", conf, label == gold) for _, label, conf, _, _, _, gold in _joint(labels)]
    for modality, confidence, right in scored:
        bins.setdefault((modality, min(int(confidence * 10), 9)), []).append((confidence, right))
    rows = store.query(db, "report_calibration", {"run_id": "r-main"}).to_pylist()
    assert {(r["modality"], r["bin"]) for r in rows} == set(bins)
    for r in rows:
        points = bins[r["modality"], r["bin"]]
        assert r["n"] == len(points)
        assert r["mean_confidence"] == pytest.approx(np.mean([c for c, _ in points]))
        assert r["accuracy"] == pytest.approx(np.mean([right for _, right in points]))
    ece = {r["modality_a"]: r["refined"] for r in store.query(db, "report_metrics", {"run_id": "r-main"}).to_pylist()
           if r["metric"] == "gold_ece"}
    assert ece.keys() == {"image", "text", "joint"}
    assert all(r["ece"] == pytest.approx(ece[r["modality"]]) for r in rows)
    assert store.query(db, "report_calibration", {"run_id": "r-nogold"}).num_rows == 0


def test_the_terminal_report_shows_the_three_methods_the_statuses_and_the_confidence_and_stays_narrow(made):
    db, labels = made
    text = report.render_report(db, "r-main")
    header = next(line for line in text.splitlines() if line.startswith("| metric"))
    assert header.split("|")[4:-1] == [" base  ", " pairwise ", " refined ", " pw-base ", " ref-pw "]
    assert "| agreement_f1_weighted | image    | text | 0.500 | 0.800    | 0.850   | +0.300  | +0.050 |" in text
    assert "| gold_ece" in text and "| joint    | gold" in text
    joint = _joint(labels)
    confident = [label == gold for _, label, conf, _, _, _, gold in joint if conf >= 0.9]
    assert (f"Joint confidence ≥ 0.9: {len(confident) / len(joint):.1%}, {np.mean(confident):.1%} right;"
            in text)
    assert "- split: the modalities' own refined labels differ" in text
    metrics = text[text.index("## Agreement"):text.index("## Class shares")]
    assert max(len(line) for line in metrics.splitlines() if line.startswith("|")) <= 100


def test_a_run_from_before_the_refinement_keeps_its_statuses_and_has_no_confidence(made):
    db, _ = made
    page = html_report.build_report(db, "r-old").html
    assert "older run: a tie in votes, broken by the larger normalized pairwise margin" in page
    assert "its labels are votes, with no confidence" in page
    text = report.render_report(db, "r-old")
    assert "- majority: older run:" in text and "Joint confidence" not in text
    assert "| refined |" in text  # an empty column, the same table as any run's


def test_text_from_the_database_is_escaped(made):
    db, _ = made
    page = html_report.build_report(db, "r-main").html
    assert TRICKY not in page and "&lt;img src=x onerror=" in page


# ---------------------------------------------------------------- the page as a browser shows it


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("selenium")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("headless Chromium needs the Debian packages chromium and chromium-driver (see .ci/run)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


@pytest.fixture(scope="module")
def page(made, browser, tmp_path_factory):
    """The default HTML report, written by the CLI as a user would, open in Chromium."""
    db, _ = made
    out = tmp_path_factory.mktemp("html") / "report.html"
    result = subprocess.run([PAIRWISE, "report", "--db", str(db), "--html", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "run r-main" in result.stderr
    browser.get(out.as_uri())
    return browser


def test_every_figure_loads(page):
    sizes = page.execute_script(
        "return [...document.images].map(i => [i.complete, i.naturalWidth, i.closest('section').id])")
    # the reliability diagram, a pair of modalities, two modalities and the joint label against gold, the class
    # shares, a mask heatmap per modality
    assert Counter(section for _, _, section in sizes) == {"confidence": 1, "agreement": 1, "gold": 3, "shares": 1,
                                                           "masks": 2}
    assert all(complete and width > 0 for complete, width, _ in sizes)


def test_the_page_does_not_scroll_sideways_at_1400_px(page):
    assert page.execute_script("return window.innerWidth") >= 1380
    overflow = page.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0


def test_every_section_is_there_with_its_content(page):
    ids = page.execute_script("return [...document.querySelectorAll('section')].map(s => s.id)")
    assert ids == ["run", "changes", "metrics", "consensus", "confidence", "agreement", "gold", "shares", "issues",
                   "masks"]
    text = page.execute_script("return document.body.innerText")
    assert "Pairwise run r-main: succeeded" in text
    assert "What changed" in text and ("new in the source" in text or "No consensus label appeared" in text)
    assert "agreement_f1_weighted" in text and "+0.300" in text
    assert TRICKY in text  # a given label of the issues table, shown as text
    assert page.title == "Pairwise run r-main: succeeded"  # and its onerror never ran


def test_the_annotation_issues_table_shows_each_route_s_evidence_top_issue_first(page):
    headers = page.execute_script("return [...document.querySelectorAll('#issues th')].map(c => c.innerText)")
    assert headers == ["rank", "item", "given label", "suggested label", "p_given", "route", "zero-shot p_given",
                       "zero-shot label", "label-aware p_given", "label-aware label", "agreeing modalities"]
    rows = page.execute_script(
        "return [...document.querySelectorAll('#issues tbody tr')].map(r => [...r.cells].map(c => c.innerText))")
    assert rows == [["1", FIRST_ISSUE, "bag", "shoe", "4.2e-04", "both", "0.125", "shoe", "8.0e-04", "shoe", "2"],
                    ["2", "item-011", TRICKY, "shoe", "0.040", "both", "0.310", "hat", "0.020", "shoe", "1"],
                    ["3", LONG_ID, "hat", "bag", "0.200", "zero-shot", "0.200", "bag", "–", "–", "0"]]
    notes = page.execute_script("return [...document.querySelectorAll('#issues p.note')].map(p => p.innerText)")
    assert notes[-1].startswith("p_given: the probability that the given label is right")
    assert "zero-shot (zs): the refined joint posterior" in notes[-1] and "label-aware (la)" in notes[-1]


def test_a_run_from_before_schema_4_shows_its_issues_scored_by_the_old_rules(made):
    db, _ = made
    page = html_report.build_report(db, "r-old").html
    issues = page[page.index('<section id="issues">'):]
    issues = issues[:issues.index("</section>")]
    assert "<th>score</th>" in issues and "<th>given gap</th>" in issues and "<th>p_given</th>" not in issues
    assert '<td rowspan="2">2.250</td>' in issues and "<td>hat (0.100)</td>" in issues
    assert issues.index(FIRST_ISSUE) < issues.index("item-011") and "rowspan" in issues
    assert "Scored by the schema-3 rules" in issues
    text = report.render_report(db, "r-old")
    table = text[text.index("## Labels worth a look: top 2 of 2"):]
    assert "| rank | item_id  | given_label" in table and "| score |" in table
    assert "| 1    | item-007 | bag " in table and "2.250" in table
    assert "Scored by the schema-3 rules" in table and "p_given" not in table.replace("no p_given", "")


def test_the_terminal_report_shows_the_top_issues_with_each_route_s_evidence(made):
    db, _ = made
    text = report.render_report(db, "r-main")
    section = text[text.index("## Labels worth a look: top 3 of 3 (annotation_issues)"):].splitlines()
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in section if line.startswith("|")]
    assert table[0] == ["rank", "item_id", "given", "suggested", "p_given", "route", "zs p_given", "zs label",
                        "la p_given", "la label", "agree"]
    assert table[2] == ["1", FIRST_ISSUE, "bag", "shoe", "4.2e-04", "both", "0.125", "shoe", "8.0e-04", "shoe", "2"]
    assert table[4] == ["3", LONG_ID, "hat", "bag", "0.200", "zero-shot", "0.200", "bag", "-", "-", "0"]
    assert section[-1].startswith("p_given: the probability that the given label is right")
    assert "score" not in "\n".join(section)


def test_the_metrics_table_has_the_refined_column_and_both_gains(page):
    headers = page.execute_script("return [...document.querySelectorAll('#metrics th')].map(c => c.innerText)")
    assert headers[3:] == ["base", "pairwise", "refined", "pairwise − base", "refined − pairwise"]
    rows = page.execute_script(
        "return [...document.querySelectorAll('#metrics tbody tr')].map(r => [...r.cells].map(c => c.innerText))")
    assert ["agreement_f1_weighted", "image", "text", "0.500", "0.800", "0.850", "+0.300", "+0.050"] in rows
    assert [r[:6] for r in rows if r[1] == "joint"] == [["gold_ece", "joint", "gold", "–", "–", r[5]]
                                                        for r in rows if r[1] == "joint"]  # refined only, last
    assert rows[-1][1] == "joint"


def test_the_reliability_diagram_names_each_curve_and_the_joint_label_against_gold_has_one_panel(page):
    figure = page.execute_script(
        "const f = document.querySelector('#confidence figure');"
        "return [f.querySelector('img').alt, f.querySelector('img').naturalWidth, f.innerText]")
    assert figure[0] == "Reliability diagram" and figure[1] > 300
    assert "ECE" in figure[2] and "joint label in black" in figure[2]
    titles = page.execute_script(
        "return [...document.querySelectorAll('#gold figcaption b')].map(b => b.innerText)")
    assert titles == ["image against gold.", "text against gold.", "joint against gold."]
    captions = page.execute_script("return [...document.querySelectorAll('#gold figcaption')].map(c => c.innerText)")
    assert "one panel per method: base, pairwise, refined" in captions[0] and "method refined" in captions[2]
    consensus = page.execute_script("return document.querySelector('#consensus').innerText")
    assert "joint confidence" in consensus and "≥ 0.9" in consensus and "right against gold" in consensus


def test_no_console_errors(page):
    errors = [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


# ---------------------------------------------------------------- the command line and the Prefect artifact


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "{tmp}/missing.duckdb"], "no such DuckDB file"),
        (["--db", "{db}", "--run-id", "nope"], "no run 'nope' in {db} (the latest is r-failed; `pairwise runs --db {db}` "
                                               "lists them all)"),
        (["--db", "{tmp}/empty.duckdb"], "no succeeded run yet"),
        (["--db", "{tmp}/not-a-db.duckdb"], "not-a-db.duckdb: not a DuckDB file"),
        (["--db", "{db}", "--html", "{tmp}/not-a-db.duckdb/out.html"], "not-a-db.duckdb is a file, not a folder"),
        (["--db", "{db}", "--html", "{tmp}/typo/out.html"], "cannot write the report: no folder"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(made, tmp_path, args, message):
    db, _ = made
    with store.connect(tmp_path / "empty.duckdb"):
        pass
    (tmp_path / "not-a-db.duckdb").write_text("hello")
    argv = [a.format(tmp=tmp_path, db=db) for a in args]
    html = [] if "--html" in argv else ["--html", str(tmp_path / "out.html")]
    result = subprocess.run([PAIRWISE, "report", *argv, *html],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message.format(db=db) in result.stderr
    assert not (tmp_path / "out.html").exists()
    assert not (tmp_path / "typo").exists()  # no folder made for a mistyped path


def test_the_prefect_artifact_embeds_the_main_figures_and_names_the_html_report(made, monkeypatch):
    from tasks import artifacts

    db, _ = made
    published = {}
    monkeypatch.setattr(artifacts, "create_table_artifact", lambda **kwargs: None)
    monkeypatch.setattr(artifacts, "create_markdown_artifact", lambda **kwargs: published.update(kwargs))
    artifacts.publish_artifacts.fn(str(db), "r-main", {"run_id": "r-main"})
    markdown = published["markdown"]
    path = report_path(db, "r-main")
    assert path.is_file() and str(path.resolve()) in markdown
    assert markdown.count("](data:image/png;base64,") == 3
    assert [line for line in markdown.splitlines() if line.startswith("### ")] == [
        "### joint against gold", "### Reliability diagram", "### Class shares"]
    assert markdown.startswith("# Run r-main: succeeded")
