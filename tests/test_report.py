"""The Snakemake HTML report, rendered and opened in a real headless browser (Debian's chromium).

`test_demo_report_in_a_browser` renders the report of the whole demo run (session fixture
`demo_run`); `test_report_of_fixture_results_in_a_browser` does the same for hand-made results
(only the rules `tables` and `figures` run), so the report is checked even without training.
Each opens the report in headless chromium, checks in the DOM that the workflow description,
the categories, the tables and the figures are there, and takes screenshots that must not be blank.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import pytest  # noqa: E402
from test_results import STUDY_NETWORKS, write_fake_run  # noqa: E402

from conftest import copy_workflow, snakemake_cmd  # noqa: E402
from spikebench.config import load_config  # noqa: E402
from spikebench.results.answer import answer_rst  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
CATEGORIES = (
    "Cost of spiking",
    "Experiment 1",
    "Experiment 2",
    "Experiment 3",
    "Summary",
    "Paper comparison",
    "Neuromorphic estimate",
)
TABLES = ("table1", "table2", "comparison", "cost", "hardware")
FIGURES = ("cost_of_spiking", "experiment1", "experiment2", "experiment3", "energy_per_epoch", "accuracy_vs_energy")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    pytest.skip(
        "chromium not found (install Debian's package: apt-get install -y chromium); the report "
        "test needs a real headless browser"
    )


def chromium(
    browser: str, profile: Path, page: Path, *args: str, window: str = "1400,1000"
) -> subprocess.CompletedProcess:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        "--virtual-time-budget=15000",
        *args,
        page.resolve().as_uri(),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, f"chromium failed: {run.stderr[-3000:]}"
    return run


def visible_dom(dom: str) -> str:
    """The DOM without scripts and styles (what the page rendered, not the data it embeds)."""
    return re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S)


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))).strip()


def with_view(report: Path, out: Path, result_suffix: str, category: str, subcategory: str) -> Path:
    """A copy of the report that opens `category`/`subcategory` and shows the result ending in `result_suffix`."""
    page = report.read_text(encoding="utf-8")
    script = """<script>
(function go(tries) {
  if (typeof app === 'undefined' || !app) { if (tries > 0) setTimeout(function () { go(tries - 1); }, 100); return; }
  app.setView({navbarMode: 'subcategory', category: %s, subcategory: %s});
  setTimeout(function () {
    var path = Object.keys(results).find(function (p) { return p.endsWith(%s); });
    var kind = results[path].mime_type.indexOf('image/') === 0 ? 'img' : 'html';
    app.setView({content: kind, contentPath: results[path].data_uri, resultPath: path});
  }, 300);
})(100);
</script>""" % (json.dumps(category), json.dumps(subcategory), json.dumps(result_suffix))  # noqa: UP031 - JS braces
    end = page.rindex("</body>")
    out.write_text(page[:end] + script + page[end:], encoding="utf-8")
    return out


def with_position_probe(report: Path, out: Path) -> Path:
    """A copy of the report that, once the landing page is drawn, writes where its title and DEMO DATA banner
    lie (``getBoundingClientRect``, CSS px) and the viewport's size as JSON into ``<pre id="position-probe">``."""
    page = report.read_text(encoding="utf-8")
    script = """<script>
(function probe(tries) {
  var prose = document.querySelector('div.prose');
  if (!prose || !prose.querySelector('h1')) {
    if (tries > 0) setTimeout(function () { probe(tries - 1); }, 100);
    return;
  }
  setTimeout(function () {
    function box(el) {
      if (!el) return null;
      var r = el.getBoundingClientRect();
      return {top: r.top, bottom: r.bottom};
    }
    var banner = Array.prototype.find.call(prose.querySelectorAll('p'), function (p) {
      return p.textContent.trim().indexOf('DEMO DATA') === 0; });
    var out = document.createElement('pre');
    out.id = 'position-probe';
    var table = prose.querySelector('table');
    out.textContent = JSON.stringify({height: window.innerHeight, width: window.innerWidth,
                                      title: box(prose.querySelector('h1')), banner: box(banner),
                                      answer: box(table), answer_text: table ? table.innerText : null});
    document.body.appendChild(out);
  }, 500);
})(100);
</script>"""
    end = page.rindex("</body>")
    out.write_text(page[:end] + script + page[end:], encoding="utf-8")
    return out


def assert_landing_page_top_in_view(browser: str, profile: Path, report: Path, tmp_path: Path, *, demo: bool) -> None:
    """At 1400x900 the title (and on a demo the DEMO DATA banner) and this run's answer lie inside the viewport
    without scrolling (Snakemake centres a description taller than the window, cutting off its top)."""
    page = with_position_probe(report, tmp_path / "position-probe.html")
    dom = chromium(browser, profile, page, "--dump-dom", window="1400,900").stdout
    found = re.search(r'<pre id="position-probe">(.*?)</pre>', dom, re.S)
    assert found, "the landing page's title was never drawn"
    where = json.loads(html.unescape(found.group(1)))
    assert where["width"] >= 1300 and where["height"] >= 700, where  # headless: 900 minus its window frame
    for name in ("title", "banner", "answer") if demo else ("title", "answer"):
        box = where[name]
        assert box is not None, f"no {name} on the landing page: {where}"
        assert 0 <= box["top"] and box["bottom"] <= where["height"], f"the {name} is outside the viewport: {where}"
    # this run's answer, readable without scrolling: a ratio per experiment and figure, or why there is none
    answer = where["answer_text"]
    for label in ("time / sample", "energy / sample", "activation mem.", "time to target", "test accuracy %"):
        assert label in answer, answer
    assert len(re.findall(r"\d+(?:\.\d+)?x", answer)) >= 3, answer  # at least the time ratios of the experiments


def assert_tables_fit(browser: str, profile: Path, tables: Path, tmp_path: Path) -> None:
    """Every HTML table page of a run, opened at 1400x900, is at most the window's width (no horizontal scroll):
    wide tables are split into parts, reasons are footnotes, not columns."""
    probe = """<script>window.addEventListener('load', function () { setTimeout(function () {
  var out = document.createElement('pre'); out.id = 'width-probe';
  var rights = Array.prototype.map.call(document.querySelectorAll('table'),
                                        function (t) { return t.getBoundingClientRect().right; });
  out.textContent = JSON.stringify({scroll: document.documentElement.scrollWidth, window: window.innerWidth,
                                    tables: rights});
  document.body.appendChild(out); }, 200); });</script>"""
    pages = sorted(tables.glob("*.html"))
    assert len(pages) >= 5, pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        copy = tmp_path / f"width-{page.name}"
        copy.write_text(text[: text.rindex("</body>")] + probe + "</body></html>", encoding="utf-8")
        dom = chromium(browser, profile, copy, "--dump-dom", window="1400,900").stdout
        found = re.search(r'<pre id="width-probe">(.*?)</pre>', dom, re.S)
        assert found, f"{page.name}: never loaded"
        where = json.loads(html.unescape(found.group(1)))
        assert where["tables"], f"{page.name}: no table"
        assert where["scroll"] <= 1400 and max(where["tables"]) <= 1400, f"{page.name} is too wide: {where}"


def assert_not_blank(png: Path, left: int = 300) -> None:
    image = mpimg.imread(png)[..., :3]
    assert image.shape[0] >= 900 and image.shape[1] >= 1300, image.shape
    assert image.std() > 0.05, f"{png.name}: screenshot is blank"
    content = image[:, left:]  # right of the report's navigation bar
    assert content.std() > 0.05 and (content < 0.5).mean() > 0.002, f"{png.name}: content area is blank"


def make_report(workdir: Path, *extra: str) -> Path:
    run = subprocess.run(
        snakemake_cmd("--report", "report.html", "--configfile", "config.demo.yaml", *extra),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    report = workdir / "report.html"
    assert report.is_file() and report.stat().st_size > 100_000
    return report


def check_report_in_browser(report: Path, tmp_path: Path, *, demo: bool, n_networks: int = len(STUDY_NETWORKS)) -> None:
    """`n_networks`: rows of Table I (the configured networks, with their implementation twins)."""
    browser = find_chromium()
    profile = tmp_path / "chromium-profile"

    # The landing page: the workflow description (DEMO DATA at the top of a demo) and the categories
    dom = visible_dom(chromium(browser, profile, report, "--dump-dom").stdout)
    described = re.search(r'<div class="prose[^"]*">(.*?)</div>\s*</div>', dom, re.S)
    assert described, "workflow description not rendered"
    description = text_of(described.group(1))
    assert "spikebench: what does a spiking neural network cost on ordinary GPUs?" in description
    assert "Headline." in description and "RTX 3060 Ti" in description
    assert description.startswith("DEMO DATA") == demo, description[:200]
    navigation = text_of(re.sub(r'<div class="prose.*?</div>\s*</div>', "", dom, flags=re.S))
    for category in CATEGORIES:
        assert category in navigation, f"category {category!r} missing from the report"
    listed = sorted(CATEGORIES, key=navigation.index)
    assert listed[0] == "Cost of spiking", f"the headline is not the first category: {listed}"
    assert_landing_page_top_in_view(browser, profile, report, tmp_path, demo=demo)

    # Table I shown (HTML in the page's frame), the Summary tables listed with their labels
    page = with_view(report, tmp_path / "table1-view.html", "/table1.html", "Summary", "Tables")
    dom = visible_dom(chromium(browser, profile, page, "--dump-dom").stdout)
    listed = text_of(dom)
    for label in ("Table I: training and validation", "Table II: test", "Methods: hardware and software of this run"):
        assert label in listed, f"{label!r} not listed under Summary"
    frame = re.search(r'<iframe[^>]*src="data:text/html;[^"]*filename=table1\.html;base64,([^"]+)"', dom)
    assert frame, "Table I is not shown in the page"
    table = base64.b64decode(html.unescape(frame.group(1))).decode("utf-8")
    first = table.split("</table>")[0]  # a wide table is split into parts, each with every network's row
    assert "Table I: training and validation" in table and first.count("<tr>") == 1 + n_networks
    assert ("DEMO DATA" in table) == demo
    shot = tmp_path / "table1.png"
    chromium(browser, profile, page, f"--screenshot={shot}")
    assert_not_blank(shot)

    # A figure shown as an image
    page = with_view(report, tmp_path / "figure-view.html", "/experiment1.svg", "Experiment 1", "Figures")
    dom = visible_dom(chromium(browser, profile, page, "--dump-dom").stdout)
    image = re.search(r'<img src="data:image/svg\+xml;[^"]*filename=experiment1\.svg;base64,([^"]+)"', dom)
    assert image, "the figure of experiment 1 is not shown in the page"
    svg = base64.b64decode(html.unescape(image.group(1))).decode("utf-8")
    assert "Experiment 1: ANN vs SNN" in svg and ("DEMO DATA" in svg) == demo
    shot = tmp_path / "experiment1.png"
    chromium(browser, profile, page, f"--screenshot={shot}")
    assert_not_blank(shot)


@pytest.mark.parametrize("configs, demo", [(("config.yaml",), False), (("config.yaml", "config.demo.yaml"), True)])
def test_report_texts_render_without_rst_errors(configs, demo, tmp_path):
    """Every caption and the workflow description, as Snakemake renders them (Jinja2, then docutils)."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    from spikebench.config import load_config

    config = load_config(*(PROJECT / c for c in configs))
    config["results"] = str(tmp_path)  # workflow.rst includes <results>/tables/answer.rst, written by rule tables
    (tmp_path / "tables").mkdir()
    rows, notes = [["", "Exp. 1 SNN / ANN, 3/3 seeds"], ["time / sample", "**3.1x** (2.0\u20134.9) · 2.81x"]], []
    (tmp_path / "tables" / "answer.rst").write_text(answer_rst(rows, notes, demo=demo))

    class Snakemake:  # what Snakemake passes to the templates (config; captions also get the job's fields)
        pass

    Snakemake.config = config
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    texts = sorted((PROJECT / "report").glob("*.rst"))
    assert {p.stem for p in texts} >= {"workflow", *TABLES, *FIGURES, "experiment"}
    workflow = (PROJECT / "report" / "workflow.rst").read_text()
    assert len(workflow.splitlines()) <= 40, "keep the landing page short: long explanations go into captions"
    # Snakemake appends a link target per category (`Summary`_ etc.) to every text it renders
    links = "\n\n" + "\n".join(f".. _{c}: javascript:app.showCategory('{c}')" for c in CATEGORIES) + "\n"
    for path in texts:
        rst = env.from_string(path.read_text() + links).render(snakemake=Snakemake)
        settings = {"report_level": 2, "halt_level": 5, "warning_stream": io.StringIO()}  # problems go into the page
        body = publish_parts(rst, writer="html", settings_overrides=settings)["html_body"]
        assert "system-message" not in body, f"{path.name}: reStructuredText problem\n{body}"
        assert ("DEMO DATA" in body) == demo, path.name
    description = text_of(
        env.from_string((PROJECT / "report" / "workflow.rst").read_text()).render(snakemake=Snakemake)
    )
    assert description.startswith("**DEMO DATA**") == demo


def with_results_rules(workdir: Path) -> None:
    """Wire rules/results.smk into a workflow copy whose Snakefile does not include it yet."""
    snakefile = workdir / "Snakefile"
    text = snakefile.read_text()
    if "rules/results.smk" not in text:
        text = text.replace(
            'include: "rules/evaluation.smk"\n', 'include: "rules/evaluation.smk"\ninclude: "rules/results.smk"\n'
        )
    if "results_targets()" not in text and "results_targets()" not in (workdir / "rules" / "common.smk").read_text():
        text = text.replace("all_targets(),", "all_targets() + results_targets(),")
    snakefile.write_text(text)


def one_run_per_network(demo_config: Path) -> None:
    """The demo config without its sweep, second seeds, snnTorch twin and profile jobs: the hand-made results have
    one run per study network, and no weights."""
    import yaml

    config = yaml.safe_load(demo_config.read_text())
    config["sweeps"] = {}
    config["implementations"] = {"snntorch": []}
    config["profile"] = {"enabled": False}  # no weights to profile: hand-made results stand in for training
    for spec in config["networks"].values():
        spec.pop("repeats", None)
    demo_config.write_text(yaml.safe_dump(config))


@pytest.mark.slow
def test_report_of_fixture_results_in_a_browser(tmp_path):
    find_chromium()
    workdir = copy_workflow(tmp_path / "workflow")
    with_results_rules(workdir)
    write_fake_run(workdir / "results-demo", telemetry="cpu")
    one_run_per_network(workdir / "config.demo.yaml")
    only_results = (
        "--allowed-rules",
        "tables",
        "figures",
        "aggregate",
        "sweep_figures",
        "neuromorphic",
        "all",
    )  # hand-made results stand in for training
    run = subprocess.run(
        snakemake_cmd("--cores", "2", "--configfile", "config.demo.yaml", *only_results),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    for name in TABLES:
        assert (workdir / "results-demo" / "tables" / f"{name}.html").is_file()
    for name in FIGURES:
        assert (workdir / "results-demo" / "figures" / f"{name}.svg").is_file()
    # a figure style change reruns the figures only, not the tables
    (workdir / "style.yaml").write_text("figures:\n  style: darkgrid\n  context: talk\n  dpi: 100\n")
    plan = subprocess.run(
        snakemake_cmd("-n", "--cores", "1", "--configfile", "config.demo.yaml", "style.yaml", *only_results),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plan.returncode == 0, plan.stdout + plan.stderr
    planned = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout.split("Job stats:")[1].split("total")[0], re.M))
    assert planned == {"figures": "1", "neuromorphic": "1", "all": "1"}, plan.stdout  # both draw figures
    check_report_in_browser(make_report(workdir, *only_results), tmp_path, demo=True)
    assert_tables_fit(find_chromium(), tmp_path / "chromium-profile", workdir / "results-demo" / "tables", tmp_path)


@pytest.mark.slow
def test_demo_report_in_a_browser(demo_run, tmp_path):
    find_chromium()
    results = demo_run / "results-demo"
    missing = [f"tables/{n}.html" for n in TABLES if not (results / "tables" / f"{n}.html").is_file()]
    missing += [f"figures/{n}.svg" for n in FIGURES if not (results / "figures" / f"{n}.svg").is_file()]
    assert not missing, (
        f"the demo run made no {missing}: the Snakefile must include rules/results.smk "
        "and all_targets() must return results_targets() too"
    )
    demo_networks = load_config(demo_run / "config.yaml", demo_run / "config.demo.yaml")["networks"]
    check_report_in_browser(make_report(demo_run), tmp_path, demo=True, n_networks=len(demo_networks))
    assert_tables_fit(find_chromium(), tmp_path / "chromium-profile", results / "tables", tmp_path)


def test_tables_open_on_their_html_view_in_the_report():
    """Snakemake's report shows a two-valued label as a toggle and opens on the value that sorts first (JavaScript
    string order: capitals before lower case): the HTML view's label must sort before the CSV's."""
    text = (PROJECT / "rules" / "results_common.smk").read_text()
    found = re.search(r'for ext, fmt in \(\("html", "([^"]+)"\), \("csv", "([^"]+)"\)\)', text)
    assert found, "the tables' format labels are not where this test looks for them"
    html_label, csv_label = found.groups()
    assert sorted([csv_label, html_label])[0] == html_label, (html_label, csv_label)
