# Results stage plumbing, for the rules of rules/results.smk only: the paths of the tables and figures,
# their places in the Snakemake report (categories, captions, titles), the input functions of the
# results rules and their targets for `all_targets()` (rules/common.smk). Functions live apart from the
# rules, as `snakemake --lint` asks; the Snakefile includes this file just before rules/results.smk.
from spikebench.energy import energy_model as _energy_model, energy_settings as _energy_settings

# ---- results stage: tables and figures, with their places in the report

# Relative to the working directory, so that a moved or copied workflow does not rerun `tables`.
PAPER_VALUES = os.path.relpath(os.path.join(workflow.basedir, "spikebench", "paper_values.csv"))
TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"
# name: (report category, caption, title in the report)
TABLE_ITEMS = {
    "table1": ("Summary", "table1", "Table I: training and validation"),
    "table2": ("Summary", "table2", "Table II: test"),
    "hardware": ("Summary", "hardware", "Methods: hardware and software of this run"),
    "comparison": ("Paper comparison", "comparison", "The study's Tables I and II next to this run"),
    "cost": ("Cost of spiking", "cost", "The cost of spiking, this run and the study (table)"),
}
# The headline figure; its category sorts first in the report's menu.
HEADLINE = ("Cost of spiking", "The cost of spiking: SNN over ANN, this run and the study")
SUMMARY_FIGURES = {
    "accuracy_vs_energy": "Test accuracy vs energy and time per test sample",
}
# Figures written always but shown in the report only where they hold data (a copy in this folder).
MEASURED_FIGURES = f"{FIGURES}/measured"


def results_networks():
    """What the results rules need of each network: its experiment, dataset, kind, architecture, implementation."""
    keys = ("experiment", "dataset", "kind", "architecture", "implementation")
    return {n: {k: config["networks"][n][k] for k in keys if k in config["networks"][n]} for n in config["networks"]}


def results_experiments():
    return sorted({int(config["networks"][n]["experiment"]) for n in config["networks"]})


def _caption(name):
    return f"../report/{name}.rst"


def experiment_caption(experiment):
    specific = os.path.join(workflow.basedir, "report", f"experiment{experiment}.rst")
    return _caption(f"experiment{experiment}") if os.path.exists(specific) else _caption("experiment")


def table_outputs():
    outputs = {}
    for name, (category, caption, title) in TABLE_ITEMS.items():
        for ext, fmt in (("html", "HTML (shown)"), ("csv", "download (CSV)")):  # sorted first: HTML shown
            outputs[f"{name}_{ext}"] = report(
                f"{TABLES}/{name}.{ext}",
                category=category,
                subcategory="Tables",
                labels={"item": title, "format": fmt},
                caption=_caption(caption),
            )
    outputs["answer_rst"] = f"{TABLES}/answer.rst"  # this run's answer, included by report/workflow.rst
    return outputs


def figure_outputs():
    outputs = {"cost_of_spiking_png": f"{FIGURES}/cost_of_spiking.png"}
    outputs["cost_of_spiking_svg"] = report(
        f"{FIGURES}/cost_of_spiking.svg",
        category=HEADLINE[0],
        subcategory="Figures",
        labels={"item": HEADLINE[1], "format": "SVG"},
        caption=_caption("cost_of_spiking"),
    )
    for experiment in results_experiments():
        name = f"experiment{experiment}"
        outputs[f"{name}_png"] = f"{FIGURES}/{name}.png"
        outputs[f"{name}_svg"] = report(
            f"{FIGURES}/{name}.svg",
            category=f"Experiment {experiment}",
            subcategory="Figures",
            labels={"item": f"Experiment {experiment}: panels A-D", "format": "SVG"},
            caption=experiment_caption(experiment),
        )
    for name, title in SUMMARY_FIGURES.items():
        outputs[f"{name}_png"] = f"{FIGURES}/{name}.png"
        outputs[f"{name}_svg"] = report(
            f"{FIGURES}/{name}.svg",
            category="Summary",
            subcategory="Figures",
            labels={"item": title, "format": "SVG"},
            caption=_caption(name),
        )
    outputs["energy_per_epoch_png"] = f"{FIGURES}/energy_per_epoch.png"
    outputs["energy_per_epoch_svg"] = f"{FIGURES}/energy_per_epoch.svg"
    outputs["measured"] = report(
        directory(MEASURED_FIGURES),
        patterns=["{name}.svg"],
        category="Summary",
        subcategory="Figures",
        labels={"item": "Energy per epoch, all networks", "format": "SVG"},
        caption=_caption("energy_per_epoch"),
    )
    return outputs


def results_targets():
    """Every table (CSV + HTML) and figure (PNG + SVG): add these to `all_targets()`."""
    names = list(TABLE_ITEMS)
    targets = [f"{TABLES}/{name}.{ext}" for name in names for ext in ("csv", "html")]
    figures = ["cost_of_spiking"] + [f"experiment{e}" for e in results_experiments()] + list(SUMMARY_FIGURES)
    figures.append("energy_per_epoch")
    targets += [f"{FIGURES}/{name}.{ext}" for name in figures for ext in ("png", "svg")]
    return targets + [MEASURED_FIGURES]


def per_network(name):
    """`name` of the run that the study's tables show for each configured network."""
    return [f"{RESULTS}/{BASE_RUNS[network]}/{name}" for network in config["networks"]]


# ---- every run (networks, sweep variants, seeds): spikebench.aggregate and spikebench.sweep_figures

AGGREGATE_ITEMS = {
    "runs": "Every run: network or sweep variant, seed, status",
    "summary": "Networks and sweep variants: mean and 95% interval over seeds",
    "difference": "SNN minus ANN, with Welch's interval",
}
#: One figure per swept setting (config `sweeps`).
SWEPT_SETTINGS = sorted({next(k for k in s if k != "networks") for s in (config.get("sweeps") or {}).values()})


def run_info():
    """What the aggregation needs of each run id: its network, sweep point, seed and the network's identity."""
    keys = ("experiment", "dataset", "kind", "architecture", "implementation")
    return {
        run_id: {
            **{k: run[k] for k in ("network", "base", "sweep", "setting", "value", "seed")},
            **{k: run["spec"][k] for k in keys if k in run["spec"]},
        }
        for run_id, run in RUNS.items()
    }


def per_run(name):
    return [f"{RESULTS}/{run_id}/{name}" for run_id in NETWORKS]


def aggregate_outputs():
    return {
        f"{name}_{ext}": report(
            f"{TABLES}/{name}.{ext}",
            category="Sweeps and repeats",
            subcategory="Tables",
            labels={"item": title, "format": fmt},
            caption=_caption(name),
        )
        for name, title in AGGREGATE_ITEMS.items()
        for ext, fmt in (("html", "HTML (shown)"), ("csv", "download (CSV)"))
    }


def sweep_figure_outputs():
    outputs = {}
    for setting in SWEPT_SETTINGS:
        outputs[f"{setting}_png"] = f"{FIGURES}/sweep_{setting}.png"
        outputs[f"{setting}_svg"] = report(
            f"{FIGURES}/sweep_{setting}.svg",
            category="Sweeps and repeats",
            subcategory="Figures",
            labels={"item": f"Sweep of {setting}", "format": "SVG"},
            caption=_caption("sweep"),
        )
    return outputs


# ---- neuromorphic estimate, its energy model and outputs (the neuromorphic rule is in rules/results.smk)

ENERGY_MODEL = _energy_model(_energy_settings(config))
# output name: (file stem, table or figure, title in the report)
NEUROMORPHIC_ITEMS = {
    "neuromorphic": ("neuromorphic", "table", "Measured vs estimated energy per test sample"),
    "ratios": ("neuromorphic_ratios", "table", "Per experiment: ratios of measured and estimated energy"),
    "layers": ("neuromorphic_layers", "table", "Operations per layer"),
    "figure": ("neuromorphic", "figure", "Firing rate per layer; measured vs estimated ratios"),
}


def neuromorphic_outputs():
    outputs = {}
    for name, (stem, what, title) in NEUROMORPHIC_ITEMS.items():
        folder = FIGURES if what == "figure" else TABLES
        shown, other = ("svg", "png") if what == "figure" else ("html", "csv")
        outputs[f"{name}_{other}"] = f"{folder}/{stem}.{other}"
        outputs[f"{name}_{shown}"] = report(
            f"{folder}/{stem}.{shown}",
            category="Neuromorphic estimate",
            subcategory="Figures" if what == "figure" else "Tables",
            labels={"item": title, "format": shown.upper()},
            caption="../report/neuromorphic.rst",
        )
    return outputs


def neuromorphic_targets():
    return [str(path) for path in neuromorphic_outputs().values()]


def aggregate_targets():
    targets = [f"{TABLES}/{name}.{ext}" for name in AGGREGATE_ITEMS for ext in ("csv", "html")]
    return targets + [f"{FIGURES}/sweep_{s}.{ext}" for s in SWEPT_SETTINGS for ext in ("png", "svg")]


def sweep_points():
    """setting -> {network, base, value} of every swept base network (its own value) and of its variants, each
    once, in order of appearance (a set of seen points: linear in the number of runs, not quadratic)."""
    points = {setting: [] for setting in SWEPT_SETTINGS}
    seen = set()

    def add(setting, point):
        key = (setting, point["network"], point["base"], repr(point["value"]))
        if key not in seen:
            seen.add(key)
            points[setting].append(point)

    for sweep in (config.get("sweeps") or {}).values():
        setting = next(k for k in sweep if k != "networks")
        for base in sweep["networks"]:
            add(setting, {"network": base, "base": base, "value": config["networks"][base].get(setting)})
    for run in RUNS.values():
        if run["setting"] is not None:
            add(run["setting"], {"network": run["network"], "base": run["base"], "value": run["value"]})
    return points
