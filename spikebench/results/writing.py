"""The tables on disk, each as CSV (empty cells for missing values, never 0) and as HTML, atomically
(:mod:`spikebench.atomic`); :func:`write_tables` is the rule tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from spikebench import atomic
from spikebench.results.answer import write_answer
from spikebench.results.comparison import comparison_notes, cost_notes, cost_of_spiking, cost_view, paper_comparison
from spikebench.results.footnotes import CHANCE_PCT, LEARNED_FACTOR, not_learned, notes_column, table_notes
from spikebench.results.hardware import hardware_table
from spikebench.results.reading import PAPER_VALUES, load_paper_values, read_epochs, read_test
from spikebench.results.render import render_html
from spikebench.results.tables import table1, table2


def write_csv(table: pd.DataFrame, path: str | Path) -> None:
    """CSV with empty cells for missing values (never 0), written atomically."""
    atomic.write_text(table.to_csv(index=False, float_format="%.6g", na_rep=""), path)


def write_table(
    table: pd.DataFrame,
    csv_path: str | Path,
    html_path: str | Path,
    *,
    title: str,
    intro: Iterable[str] = (),
    notes: Mapping[tuple[int, str], str] | None = None,
    demo: bool = False,
    html_drop: Iterable[str] = ("hardware", "paper_hardware", "run_hardware", "note", "lif_backend_note"),
    html_table: pd.DataFrame | None = None,
) -> None:
    """Write a table as CSV (with a ``notes`` column when there are footnotes) and as HTML.

    The HTML leaves out ``html_drop`` (long text the page states once, or footnotes say); with
    ``html_table`` it shows that frame (same rows, e.g. a narrower view) instead, ``notes`` keyed by its columns.
    """
    csv_table = table.copy()
    if notes is not None and "note" not in csv_table.columns and html_table is None:
        csv_table["notes"] = notes_column(table, notes)
    if demo:
        csv_table["data"] = "DEMO DATA"
    write_csv(csv_table, csv_path)
    shown = table if html_table is None else html_table
    shown = shown.drop(columns=[c for c in html_drop if c in shown.columns])
    atomic.write_text(render_html(shown, title=title, intro=intro, notes=notes, demo=demo), html_path)


def build_tables(
    epochs: Mapping[str, pd.DataFrame],
    tests: Mapping[str, Mapping],
    networks: Mapping[str, Mapping],
    paper: pd.DataFrame,
    telemetry_enabled: bool = True,
    to_target: bool = False,
) -> dict[str, pd.DataFrame]:
    """Every table of the rule tables, from the results read: table1, table2, comparison, cost, hardware
    (``to_target``: the cost table has the rows of the cost to the target accuracy, filled from the aggregate)."""
    t1 = table1(epochs, networks)
    t2 = table2(tests, networks)
    comparison = paper_comparison(t1, t2, paper, telemetry_enabled)
    cost = cost_of_spiking(t1, paper, networks, t2, to_target=to_target)
    return {"table1": t1, "table2": t2, "comparison": comparison, "cost": cost, "hardware": hardware_table(t1, t2)}


def _write_study_tables(
    tables: Mapping[str, pd.DataFrame],
    outputs: Mapping[str, str | Path],
    hardware_line: str,
    *,
    demo: bool,
    telemetry_enabled: bool,
) -> None:
    """Tables I and II, CSV + HTML, with their footnotes."""
    t1, t2 = tables["table1"], tables["table2"]
    flagged = not_learned(t2)
    write_table(
        t1,
        outputs["table1_csv"],
        outputs["table1_html"],
        demo=demo,
        notes=table_notes(t1, telemetry_enabled, flagged),
        title="Table I: training and validation (one row per network)",
        intro=[
            "The study's columns (accuracies in %, epochs to the best validation accuracy, average time per "
            "epoch of training plus validation, average device memory in % and average power over the run) "
            "and, beyond the study, energy per epoch, energy per training sample and the peak memory "
            "PyTorch allocated (the process's peak resident memory on a CPU).",
            hardware_line,
        ],
    )
    write_table(
        t2,
        outputs["table2_csv"],
        outputs["table2_html"],
        demo=demo,
        notes=table_notes(t2, telemetry_enabled, flagged),
        title="Table II: test (one row per network)",
        intro=[
            "The study's columns (test accuracy in %, time to run the test set, average device memory and power "
            "during the test, macro recall and F1) and, beyond the study, macro precision, energy of the test "
            "phase and energy per test sample.",
            hardware_line,
        ],
    )


def _write_study_comparison(
    tables: Mapping[str, pd.DataFrame], outputs: Mapping[str, str | Path], hardware_line: str, *, demo: bool
) -> None:
    """The comparison with the study and the cost of spiking, CSV + HTML (with the SNN - ANN interval verdicts)."""
    from spikebench import aggregate  # aggregate reads results' helpers: imported here, not at the top

    comparison, cost = tables["comparison"], tables["cost"]
    write_table(
        comparison,
        outputs["comparison_csv"],
        outputs["comparison_html"],
        demo=demo,
        notes={**comparison_notes(comparison), **aggregate.verdict_notes(comparison)},
        html_table=aggregate.verdict_view(comparison, comparison),
        title="The study's Tables I and II next to this run",
        intro=[
            "Each value of the study's Tables I and II (paper_value, transcribed with its table, row and column in "
            "paper_source) next to this run's (run_value); difference = run - study, ratio = run / study.",
            *aggregate.verdict_intro(comparison),
            hardware_line,
        ],
    )
    write_table(
        cost,
        outputs["cost_csv"],
        outputs["cost_html"],
        demo=demo,
        notes={**cost_notes(cost), **aggregate.verdict_notes(cost)},
        html_table=aggregate.verdict_view(cost_view(cost), cost),
        title="The cost of spiking: SNN over ANN, this run and the study",
        intro=[
            "One row per experiment and metric: the SNN's value over the ANN's (this run, study) and their ratio "
            "(> 1: the SNN costs more). Experiment 3 has no ANN: it compares the N-MNIST SNN with the MNIST "
            "SNN instead. The study reports no energy: its energy per epoch is average power x time per epoch. "
            f"A network whose test accuracy is below {LEARNED_FACTOR:g}x chance ({LEARNED_FACTOR * CHANCE_PCT:g}%) "
            "did not learn: its ratios carry a footnote.",
            *aggregate.verdict_intro(cost),
            hardware_line,
        ],
    )


def write_tables(
    epochs_paths: Mapping[str, str | Path],
    test_paths: Mapping[str, str | Path],
    networks: Mapping[str, Mapping],
    outputs: Mapping[str, str | Path],
    *,
    demo: bool = False,
    telemetry_enabled: bool = True,
    paper_path: str | Path = PAPER_VALUES,
    difference_path: str | Path | None = None,
    summary_path: str | Path | None = None,
) -> dict[str, pd.DataFrame]:
    """Rule tables: read every network's results and write all tables (CSV + HTML).

    ``outputs`` keys: table1_csv, table1_html, table2_csv, table2_html, comparison_csv,
    comparison_html, cost_csv, cost_html, hardware_csv, hardware_html. With the aggregate tables
    (``difference_path``, ``summary_path``) the cost and comparison tables say whether SNN - ANN exceeds its interval.
    """
    epochs = {n: read_epochs(p) for n, p in epochs_paths.items()}
    tests = {n: read_test(p) for n, p in test_paths.items()}
    paper = load_paper_values(paper_path)
    aggregated = difference_path is not None and summary_path is not None
    tables = build_tables(epochs, tests, networks, paper, telemetry_enabled, to_target=aggregated)
    from spikebench import aggregate

    if aggregated:
        difference = aggregate.read_table(difference_path, "difference")
        summary = aggregate.read_table(summary_path, "summary")
        tables["cost"] = aggregate.cost_verdicts(aggregate.seed_ratios(tables["cost"], summary), difference, summary)
        tables["comparison"] = aggregate.comparison_verdicts(tables["comparison"], difference, summary, networks)
    if "answer_rst" in outputs:
        write_answer(
            outputs["answer_rst"],
            tables["cost"],
            tables["table1"],
            tables["table2"],
            networks,
            paper,
            summary if aggregated else None,
            demo=demo,
        )
    paper_hw = str(paper["hardware"].iloc[0])
    run_hw = "; ".join(sorted(set(tables["table1"]["hardware"]) | set(tables["table2"]["hardware"])))
    hardware_line = f"Hardware. The study: {paper_hw}. This run: {run_hw}."
    _write_study_tables(tables, outputs, hardware_line, demo=demo, telemetry_enabled=telemetry_enabled)
    _write_study_comparison(tables, outputs, hardware_line, demo=demo)
    write_table(
        tables["hardware"],
        outputs["hardware_csv"],
        outputs["hardware_html"],
        demo=demo,
        html_drop=(),
        title="Hardware and software of this run",
        intro=[f"As the telemetry recorded it for each network and phase. The study ran on {paper_hw}."],
    )
    return tables
