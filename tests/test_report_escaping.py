"""No script in the report (issue #21): config text that reaches the report is refused by the schema where it
could be markup (< > ` & in free text, a newline anywhere), and what the schema lets through stays text in the
captions (Jinja2, then docutils, as Snakemake renders them) and in the report Snakemake writes."""

from __future__ import annotations

import io
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from test_report import CATEGORIES, find_chromium, one_run_per_network, with_results_rules
from test_results import write_fake_run

from conftest import copy_workflow, snakemake_cmd
from spikebench.config import ConfigError, load_config, validate_config

PROJECT = Path(__file__).resolve().parents[1]
SCRIPT = "<script>alert(1)</script><img src=x onerror=alert(2)>"
RAW = "x\n\n.. raw:: html\n\n   <script>alert(3)</script>"
#: The most hostile strings the schema allows: RST inline markup, a would-be directive and role, HTML entities.
ALLOWED = 'data _t_ [#]_ .. raw:: html :role:x: "q" (2014); p. 3-4'  # no < > & ` | * \\ or newline


def _config() -> dict:
    return load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml")


def _set(config: dict, dotted: str, value) -> dict:
    node = config
    *path, last = dotted.split(".")
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value
    return config


@pytest.mark.parametrize(
    "key",
    [
        "energy_model.custom.chip.source",
        "data.root",
        "results",
        "tracking.project",
        "tracking.mlflow_uri",
        "energy_model.name",
    ],
)
@pytest.mark.parametrize("payload", [SCRIPT, RAW, "ok`_ backtick", "trailing\n"])
def test_the_schema_refuses_markup_in_text_that_reaches_the_report(key, payload):
    config = _config()
    if key.startswith("energy_model.custom"):
        config["energy_model"] = {"name": "chip", "custom": {"chip": {"mac_pj": 1.0, "ac_pj": 0.1, "source": payload}}}
    else:
        _set(config, key, payload)
    with pytest.raises(ConfigError, match=re.escape(key.replace(".custom.chip", ".custom.chip"))):
        validate_config(config)


def test_the_schema_still_takes_ordinary_text():
    config = _config()
    config["energy_model"] = {
        "name": "chip",
        "custom": {"chip": {"mac_pj": 1.0, "ac_pj": 0.1, "source": "Davies et al., IEEE Micro 2018 (Loihi), p. 82"}},
    }
    config["tracking"] = {"backend": "none", "project": "snn-cost_2026.v1", "mlflow_uri": "file:///tmp/mlruns"}
    config["data"]["root"] = "/scratch/me/datasets (2026)"
    validate_config(config)


class _Tags(HTMLParser):
    """Every start tag and attribute name of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]


def _parsed(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    return parser


def test_captions_keep_allowed_hostile_text_as_text(tmp_path):
    """Every caption and the landing page, rendered with config text that is all markup characters the schema
    allows: no script, no event handler, no raw directive's output, no reStructuredText problem."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    from spikebench.results.answer import answer_rst, rst_text

    config = _config()
    config["data"]["root"] = ALLOWED
    config["results"] = str(tmp_path)
    config["energy_model"] = {"name": "chip", "custom": {"chip": {"mac_pj": 1.0, "ac_pj": 0.1, "source": ALLOWED}}}
    validate_config({**config, "results": str(tmp_path / "r")})  # the schema lets it through
    (tmp_path / "tables").mkdir()
    rows = [["", rst_text(ALLOWED)], ["time / sample", rst_text(ALLOWED)]]
    (tmp_path / "tables" / "answer.rst").write_text(answer_rst(rows, [f"1. {rst_text(ALLOWED)}"], demo=True))

    class Snakemake:
        pass

    Snakemake.config = config
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    links = "\n\n" + "\n".join(f".. _{c}: javascript:app.showCategory('{c}')" for c in CATEGORIES) + "\n"
    for path in sorted((PROJECT / "report").glob("*.rst")):
        rst = env.from_string(path.read_text() + links).render(snakemake=Snakemake)
        settings = {"report_level": 2, "halt_level": 5, "warning_stream": io.StringIO()}
        body = publish_parts(rst, writer="html", settings_overrides=settings)["html_body"]
        tags = _parsed(body)
        assert "system-message" not in body, f"{path.name}\n{body}"
        assert not {"script", "img", "iframe", "object"} & set(tags.tags), path.name
        assert not [a for a in tags.attributes if a.startswith("on")], path.name
    hardware = (PROJECT / "report" / "hardware.rst").read_text()
    assert '``{{ snakemake.config["data"]["root"] }}``' in hardware  # a path in the report is an inline literal


@pytest.mark.slow
def test_a_report_of_a_hostile_config_has_no_script_of_its_own(tmp_path):
    """The whole report (hand-made results, rules tables and figures, then `snakemake --report`): the strings
    the schema allows appear only as text; the page has exactly the script elements of Snakemake's own page."""
    find_chromium()  # the same environment as the other report tests
    workdir = copy_workflow(tmp_path / "workflow")
    with_results_rules(workdir)
    write_fake_run(workdir / "results-demo", telemetry="cpu")
    one_run_per_network(workdir / "config.demo.yaml")

    def plan(source: str) -> subprocess.CompletedProcess:
        hostile = {
            "energy_model": {"name": "chip", "custom": {"chip": {"mac_pj": 1.0, "ac_pj": 0.1, "source": source}}}
        }
        (workdir / "hostile.yaml").write_text(yaml.safe_dump(hostile))
        return subprocess.run(snakemake_cmd("--cores", "2", *common), cwd=workdir, capture_output=True, text=True)

    rules = ("--allowed-rules", "tables", "figures", "aggregate", "sweep_figures", "neuromorphic", "all")
    common = ("--configfile", "config.demo.yaml", "hostile.yaml", *rules)
    refused = plan(SCRIPT)  # the workflow stops at the config: no job runs, no report can carry it
    assert refused.returncode != 0 and "energy_model.custom.chip.source" in refused.stdout + refused.stderr
    assert not (workdir / "results-demo" / "tables" / "neuromorphic.html").exists()
    run = plan(ALLOWED)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    report = subprocess.run(
        snakemake_cmd("--report", "report.html", *common), cwd=workdir, capture_output=True, text=True
    )
    assert report.returncode == 0, (report.stdout + report.stderr)[-4000:]
    page = (workdir / "report.html").read_text(encoding="utf-8")
    assert "alert(" not in page and "system-message" not in page
    table = (workdir / "results-demo" / "tables" / "neuromorphic.html").read_text()
    assert "data _t_ [#]_ .. raw:: html" in table  # the source in the table's header, as text
    assert not [a for a in _parsed(table).attributes if a.startswith("on")]
