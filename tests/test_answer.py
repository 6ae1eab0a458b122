"""The report's landing page answer (spikebench.results.answer, written by rule tables as tables/answer.rst): one
column per experiment with this run's ratios beside the study's, the same numbers as the cost table, each
reason once as a numbered footnote, and no text from results or the config turned into markup."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from docutils.core import publish_parts
from test_verdicts import _tables

from spikebench.results.answer import answer_rst, rst_text


def _html(rst: str) -> str:
    links = "\n\n.. _Cost of spiking: #\n"
    return publish_parts(rst + links, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})[
        "html_body"
    ]


@pytest.mark.filterwarnings("ignore:Precision loss occurred")
def test_the_answer_has_the_cost_tables_numbers_per_experiment(tmp_path):
    made = _tables(tmp_path)  # the study's six networks, three seeds each, as rules aggregate and tables write them
    text = (made["folder"] / "answer.rst").read_text()
    page = _html(text)  # valid reStructuredText: halt_level 2 raises on any warning
    thead = re.search(r"<thead[^>]*>(.*?)</thead>", page, re.S).group(1)
    header = re.findall(r"<th[^>]*>(.*?)</th>", thead, re.S)
    assert [re.sub(r"<[^>]+>|&nbsp;", "", h).strip() for h in header] == [
        "",
        "Exp. 1 SNN / ANN, 3/3 seeds",
        "Exp. 2 SNN / CNN, 3/3 seeds",
        "Exp. 3 N-MNIST / MNIST SNN, 3/3 seeds",
    ]
    cost = made["cost"].set_index(["numerator", "metric"])
    row = cost.loc[("exp1_snn", "train_time_per_sample_ms")]
    assert (
        f"**{row['run_ratio']:.3g}x** ({row['ci_low']:.3g}\u2013{row['ci_high']:.3g}) · {row['paper_ratio']:.3g}x"
        in text
    )
    labels = ("time / sample", "energy / sample", "activation mem.", "saved for backward")
    for label in (*labels, "time to target (val. acc.)", "test accuracy %"):
        assert f"* - {label}" in text
    assert re.search(r"; target \d+\.\d %", text)  # the experiment's target, beside its time to reach it


def test_footnotes_are_numbered_once_and_short():
    from spikebench.results.answer import _Notes

    notes = _Notes()
    long = "no NVIDIA GPU (ran on cpu): power not measured (no NVML, and the CPU's RAPL energy counter is not readable)"
    assert notes.mark(long) == "[1]" and notes.mark("CPU: no caching allocator (no reserved memory), and ...") == "[2]"
    assert notes.mark(long) == "[1]"  # the same reason: the same number
    assert notes.lines() == ["1. no NVIDIA GPU (ran on cpu)\\: power not measured", "2. CPU\\: no caching allocator"]


@pytest.mark.parametrize(
    "hostile",
    [
        "x\n\n.. raw:: html\n\n   <script>alert(1)</script>",
        "`click <javascript:alert(1)>`_",
        "|sub| *em* **strong** _`target` [#]_ :role:`x`",
        "<img src=x onerror=alert(2)>",
    ],
)
def test_no_text_becomes_markup(hostile):
    rows = [["", f"Exp. 1 {rst_text(hostile)}"], ["time / sample", rst_text(hostile)]]
    page = _html(answer_rst(rows, [f"1. {rst_text(hostile)}"], demo=False))
    assert not re.search(r"<(script|img|a|em|strong)\b", page), page
    assert "javascript:" not in re.sub(r"&[a-z]+;", "", " ".join(re.findall(r'href="([^"]*)"', page)))
    assert "system-message" not in page


def test_the_answer_says_not_measured_and_not_reached_with_the_reason():
    from spikebench.results.answer import _Notes, _ratio_cell

    notes = _Notes()
    row = pd.Series({"run_ratio": float("nan"), "paper_ratio": 3.66, "ratio_interval_null_reason": None})
    assert _ratio_cell(row, notes, "no NVIDIA GPU (ran on cpu): power not measured") == "not measured [1] · 3.66x"
    missed = pd.Series(
        {
            "run_ratio": float("nan"),
            "paper_ratio": float("nan"),
            "ratio_interval_null_reason": "target accuracy not reached: exp1_snn in 1 of 3 seeds",
        }
    )
    assert _ratio_cell(missed, notes, None) == "not reached [2]"
    assert notes.texts[1] == "target accuracy not reached: exp1_snn in 1 of 3 seeds"
