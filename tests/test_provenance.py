"""The `code` digest: every model file is hashed for the networks that run it, and only for those."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from spikebench import provenance

SPECS = {
    "exp1_ann": {"kind": "ann", "architecture": "fc"},
    "exp1_snn": {"kind": "snn", "architecture": "fc"},
    "exp2_cnn": {"kind": "ann", "architecture": "conv5"},
    "exp2_snn": {"kind": "snn", "architecture": "conv5"},
    "exp3_snn": {"kind": "snn", "architecture": "conv2"},
    "exp3_twin": {"kind": "snn", "architecture": "conv2", "implementation": "snntorch"},
}


def test_every_model_and_kernel_file_is_hashed_by_some_network() -> None:
    hashed = set().union(*(provenance.model_files(spec) for spec in SPECS.values()))
    package = provenance.PACKAGE
    files = {str(p.relative_to(package)) for folder in ("models", "kernels") for p in (package / folder).glob("*.py")}
    assert files - hashed == set(), "files no network's digest covers: list them in spikebench/provenance.py"


@pytest.mark.parametrize(
    ("edited", "rerun"),
    [
        ("models/ann.py", {"exp1_ann", "exp2_cnn"}),
        ("models/fc.py", {"exp1_ann", "exp1_snn"}),
        ("models/tied_conv.py", {"exp2_cnn", "exp2_snn", "exp3_snn", "exp3_twin"}),
        ("models/convpool.py", {"exp2_snn", "exp3_snn"}),
        ("models/lif.py", {"exp1_snn", "exp2_snn", "exp3_snn", "exp3_twin"}),
        ("models/snntorch_twin.py", {"exp3_twin"}),
        ("models/losses.py", set(SPECS)),
        ("training.py", set(SPECS)),
    ],
)
def test_editing_a_file_changes_exactly_the_digests_of_its_networks(tmp_path: Path, monkeypatch, edited, rerun):
    copy = tmp_path / "spikebench"
    shutil.copytree(provenance.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE", copy)
    before = {name: provenance.code_digest(spec, "train") for name, spec in SPECS.items()}
    with open(copy / edited, "a") as fh:
        fh.write("\n# edited\n")
    after = {name: provenance.code_digest(spec, "train") for name, spec in SPECS.items()}
    assert {name for name in SPECS if after[name] != before[name]} == rerun


def test_a_listed_file_that_is_missing_is_named(tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "spikebench"
    shutil.copytree(provenance.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "models" / "fc.py").unlink()
    monkeypatch.setattr(provenance, "PACKAGE", copy)
    with pytest.raises(FileNotFoundError, match="models/fc.py: listed in spikebench/provenance.py"):
        provenance.code_digest(SPECS["exp1_ann"], "train")


def test_a_changed_schema_default_changes_every_digest(monkeypatch) -> None:
    """spikebench.spec fills an absent key from the schema's default, so the default is part of the digest."""
    before = {name: provenance.code_digest(spec, "train") for name, spec in SPECS.items()}
    defaults = provenance.network_defaults()
    assert defaults["implementation"] == "spikebench" and "dropout" in defaults
    monkeypatch.setattr(provenance, "network_defaults", lambda: {**defaults, "dropout": 0.5})
    after = {name: provenance.code_digest(spec, "train") for name, spec in SPECS.items()}
    assert all(after[name] != before[name] for name in SPECS)


def test_the_digest_depends_on_the_code_key_alone() -> None:
    """rules/common.smk computes a digest once per (stage, code_key) and hands it to every run with that key: a
    run's other settings (a sweep's lr, time steps, seed, channel widths) must not change what is hashed."""
    variants = {
        **SPECS,
        "exp1_snn-num_steps2": {**SPECS["exp1_snn"], "num_steps": 2, "lr": 1e-4, "batch_size": 32},
        "exp2_snn-narrow": {**SPECS["exp2_snn"], "channels": [8, 16, 32, 32, 32], "fc": 64},
        "exp3_spikebench": {**SPECS["exp3_snn"], "implementation": "spikebench"},
    }
    for stage in provenance.STAGE_MODULES:
        by_key: dict[tuple, set[str]] = {}
        for spec in variants.values():
            by_key.setdefault(provenance.code_key(spec), set()).add(provenance.code_digest(spec, stage))
        assert all(len(digests) == 1 for digests in by_key.values()), by_key
        # and different keys hash different files, so each key has its own digest
        assert len({d for digests in by_key.values() for d in digests}) == len(by_key) == len(SPECS)
