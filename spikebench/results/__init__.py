"""The study's Tables I and II from this run, next to the study's own values, and the cost of spiking.

Pure functions over the per-network results (``epochs.parquet`` as DataFrames, ``test.json`` as dicts)
build the tables; writers put them on disk as CSV and self-contained HTML, atomically. One module per
concern:

- :mod:`~spikebench.results.reading`: the run's result files and the study's values, checked;
- :mod:`~spikebench.results.cells`: one cell as a number or text, missing or not;
- :mod:`~spikebench.results.networks`: the study's names, order and pairs of the networks;
- :mod:`~spikebench.results.hardware`: what a run ran on, in one line and as a table;
- :mod:`~spikebench.results.tables`: Tables I and II (their conventions are in its docstring);
- :mod:`~spikebench.results.footnotes`: why a cell is empty, and which networks did not learn;
- :mod:`~spikebench.results.comparison`: the study next to this run, and the cost of spiking;
- :mod:`~spikebench.results.render`: a table as an HTML page;
- :mod:`~spikebench.results.writing`: CSV + HTML on disk, and the rule tables (:func:`write_tables`).

Telemetry that was not measured stays empty (NaN) and the HTML says why in a footnote; it is never
replaced by 0. The names below are this package's public interface (``from spikebench import results``).
"""

from spikebench.results.cells import as_number, distinct_text, format_number, is_missing
from spikebench.results.comparison import (
    COST_LABELS,
    COST_METRICS,
    OPTIONAL_COST_METRICS,
    comparison_notes,
    cost_notes,
    cost_of_spiking,
    cost_view,
    paper_comparison,
)
from spikebench.results.footnotes import (
    CHANCE_PCT,
    LEARNED_FACTOR,
    NULL_REASON_COLUMNS,
    TELEMETRY_QUANTITY,
    explain_missing,
    learning_notes,
    measured_note,
    missing_context,
    missing_reason,
    not_learned,
    not_learned_note,
    notes_column,
    source_kind,
    table_notes,
)
from spikebench.results.hardware import describe_hardware, hardware_table
from spikebench.results.networks import DATASET_NAMES, implementation, network_label, network_order, spiking_pairs
from spikebench.results.reading import (
    EPOCH_COLUMNS,
    HARDWARE_KEY,
    PAPER_COLUMNS,
    PAPER_VALUES,
    TELEMETRY_COLUMNS,
    TEST_KEYS,
    TEST_TELEMETRY_KEYS,
    ResultsInputError,
    load_paper_values,
    read_epochs,
    read_hardware,
    read_telemetry,
    read_test,
)
from spikebench.results.render import render_html
from spikebench.results.tables import CONTEXT_COLUMNS, TABLE1_COLUMNS, TABLE2_COLUMNS, UNITS, table1, table2
from spikebench.results.writing import build_tables, write_csv, write_table, write_tables

__all__ = [
    "CHANCE_PCT",
    "CONTEXT_COLUMNS",
    "COST_LABELS",
    "COST_METRICS",
    "DATASET_NAMES",
    "EPOCH_COLUMNS",
    "HARDWARE_KEY",
    "LEARNED_FACTOR",
    "NULL_REASON_COLUMNS",
    "OPTIONAL_COST_METRICS",
    "PAPER_COLUMNS",
    "PAPER_VALUES",
    "TABLE1_COLUMNS",
    "TABLE2_COLUMNS",
    "TELEMETRY_COLUMNS",
    "TELEMETRY_QUANTITY",
    "TEST_KEYS",
    "TEST_TELEMETRY_KEYS",
    "UNITS",
    "ResultsInputError",
    "as_number",
    "build_tables",
    "comparison_notes",
    "cost_notes",
    "cost_of_spiking",
    "cost_view",
    "describe_hardware",
    "distinct_text",
    "explain_missing",
    "format_number",
    "hardware_table",
    "implementation",
    "is_missing",
    "learning_notes",
    "load_paper_values",
    "measured_note",
    "missing_context",
    "missing_reason",
    "network_label",
    "network_order",
    "not_learned",
    "not_learned_note",
    "notes_column",
    "paper_comparison",
    "read_epochs",
    "read_hardware",
    "read_telemetry",
    "read_test",
    "render_html",
    "source_kind",
    "spiking_pairs",
    "table1",
    "table2",
    "table_notes",
    "write_csv",
    "write_table",
    "write_tables",
]
