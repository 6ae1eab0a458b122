"""Test-set metrics against scikit-learn, evaluation of trained weights, and its errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from spikebench.data.device import DatasetShapeError, DeviceImages, check_fits
from spikebench.evaluation import (
    WeightsFileError,
    classification_metrics,
    evaluate_network,
    load_weights,
)
from spikebench.models import build_network
from spikebench.spec import NetworkSpec
from spikebench.training import train_network

CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
NETWORKS = CONFIG["networks"]

# class 9 is never predicted, class 7 is predicted but never true, classes 5, 6, 8 appear nowhere
Y_TRUE = [0, 0, 1, 1, 2, 2, 3, 3, 3, 9, 9, 4, 4, 4]
Y_PRED = [0, 1, 1, 1, 2, 0, 3, 3, 2, 0, 3, 4, 7, 4]


def test_metrics_match_scikit_learn() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, n_classes=10)
    present = sorted(set(Y_TRUE) | set(Y_PRED))
    assert present == [0, 1, 2, 3, 4, 7, 9]
    p, r, f, _ = precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=present, zero_division=0)
    for k, cls in enumerate(present):
        assert m["per_class_precision"][cls] == pytest.approx(p[k])
        assert m["per_class_recall"][cls] == pytest.approx(r[k])
        assert m["per_class_f1"][cls] == pytest.approx(f[k])
    for cls in (5, 6, 8):
        assert m["per_class_precision"][cls] is None and m["per_class_recall"][cls] is None
    # scikit-learn's default labels are the classes present in either array, as ours
    p_macro, r_macro, f_macro, _ = precision_recall_fscore_support(Y_TRUE, Y_PRED, average="macro", zero_division=0)
    assert m["precision_macro"] == pytest.approx(p_macro)
    assert m["recall_macro"] == pytest.approx(r_macro)
    assert m["f1_macro"] == pytest.approx(f_macro)
    assert m["f1_macro"] != pytest.approx(2 * p_macro * r_macro / (p_macro + r_macro))  # not the F1 of the means
    assert m["accuracy"] == pytest.approx(np.mean(np.array(Y_TRUE) == np.array(Y_PRED)))
    assert m["confusion_matrix"] == confusion_matrix(Y_TRUE, Y_PRED, labels=list(range(10))).tolist()
    assert m["per_class_recall"][9] == 0.0 and m["per_class_precision"][9] == 0.0  # never predicted
    assert m["per_class_recall"][7] == 0.0  # never true


def test_metrics_reject_bad_labels() -> None:
    with pytest.raises(ValueError, match="outside 0..9"):
        classification_metrics([0, 10], [0, 1])
    with pytest.raises(ValueError, match="3 labels but y_pred 2"):
        classification_metrics([0, 1, 2], [0, 1])


def test_test_json_writer(tmp_path: Path) -> None:
    """test.json goes through spikebench.atomic.write_json: NaN as null, numpy and paths as JSON, no temp left."""
    from spikebench.atomic import write_json

    out = tmp_path / "sub" / "test.json"
    write_json({"a": math.nan, "b": [1.5, np.int64(2)], "c": Path("x")}, out)
    assert json.loads(out.read_text()) == {"a": None, "b": [1.5, 2], "c": "x"}
    assert [p.name for p in out.parent.iterdir()] == ["test.json"]


# ---------------------------------------------------------------- evaluate_network on real MNIST
@pytest.fixture(scope="module")
def mnist_sets(shared_data: Path) -> tuple[DeviceImages, DeviceImages, DeviceImages]:
    from spikebench.data.mnist import read_idx

    images = torch.from_numpy(read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").copy())[:, None]
    labels = torch.from_numpy(read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    parts = [(0, 1500), (1500, 1800), (1800, 2300)]
    return tuple(
        DeviceImages(images[a:b], labels[a:b], name=name, source=f"{shared_data}/mnist (t10k {a}:{b})")
        for (a, b), name in zip(parts, ["train", "val", "test"])
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mnist_sets) -> dict[str, tuple[Path, dict]]:
    train, val, _ = mnist_sets
    out = tmp_path_factory.mktemp("weights")
    made = {}
    for network, extra in (("exp1_ann", {"epochs": 2}), ("exp1_snn", {"epochs": 2, "num_steps": 8})):
        spec = {**NETWORKS[network], **extra}
        train_network(
            spec,
            train,
            val,
            network_id=network,
            device=torch.device("cpu"),
            seed=0,
            weights_out=out / f"{network}.pt",
            epochs_out=out / f"{network}.parquet",
            checkpoint_path=out / f"{network}.ckpt",
        )
        made[network] = (out / f"{network}.pt", spec)
    return made


class RecordingTelemetry:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def phase(self, name: str, epoch: int | None) -> None:
        self.calls.append((name, epoch))

    def phase_summary(self, name: str) -> dict:
        return {"phase": name, "energy_j": 1.0}


@pytest.mark.parametrize("network", ["exp1_ann", "exp1_snn"])
def test_evaluate_network(trained, mnist_sets, network: str) -> None:
    weights, spec = trained[network]
    test = mnist_sets[2]
    telemetry = RecordingTelemetry()
    result = evaluate_network(
        weights, spec, test, network_id=network, device=torch.device("cpu"), which="last", seed=0, telemetry=telemetry
    )
    assert telemetry.calls[0] == ("test", None)
    assert result["telemetry"] == {"phase": "test", "energy_j": 1.0}
    assert result["network"] == network and result["kind"] == spec["kind"] and result["n_test"] == 500
    assert result["epoch_of_weights"] == spec["epochs"] and result["weights"] == "last"
    assert result["accuracy"] > 0.5  # chance is 0.1
    cm = np.array(result["confusion_matrix"])
    assert cm.sum() == 500 and np.trace(cm) == round(result["accuracy"] * 500)
    assert cm.sum(1).tolist() == np.bincount(test.labels.numpy(), minlength=10).tolist()
    assert result["memory_source"] == "process_max_rss" and result["device"] == "cpu"
    assert result["test_samples_per_s"] > 0
    best = evaluate_network(
        weights, spec, test, network_id=network, device=torch.device("cpu"), which="best_val", seed=0
    )
    assert best["weights"] == "best_val" and 1 <= best["epoch_of_weights"] <= spec["epochs"]
    again = evaluate_network(weights, spec, test, network_id=network, device=torch.device("cpu"), seed=0)
    assert again["confusion_matrix"] == result["confusion_matrix"]  # same seed, same spikes, same result


def test_weights_errors_name_the_file(tmp_path: Path, trained, mnist_sets) -> None:
    weights, spec = trained["exp1_ann"]
    test = mnist_sets[2]
    cpu = torch.device("cpu")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        evaluate_network(tmp_path / "missing.pt", spec, test, network_id="exp1_ann", device=cpu)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(weights.read_bytes()[:300])
    with pytest.raises(WeightsFileError, match="corrupt.pt.*unreadable"):
        evaluate_network(corrupt, spec, test, network_id="exp1_ann", device=cpu)
    # weights of exp1_ann given to a wider network of the same id: the differing setting is named ...
    wide = {**spec, "hidden": [128, 256]}
    with pytest.raises(
        WeightsFileError,
        match=r"exp1_ann.pt was trained with other settings of exp1_ann.*"
        r"hidden: \[256, 256\] in the weights file vs \[128, 256\] in the config",
    ):
        evaluate_network(weights, wide, test, network_id="exp1_ann", device=cpu)
    # ... and where the stored settings say so too, the differing shapes
    saved = torch.load(weights, weights_only=True)
    mislabelled = tmp_path / "mislabelled.pt"
    torch.save({**saved, "spec": wide}, mislabelled)
    with pytest.raises(
        WeightsFileError,
        match=r"does not fit exp1_ann.*layers.1.weight: file \(256, 784\) "
        r"vs network \(128, 784\)",
    ):
        evaluate_network(mislabelled, wide, test, network_id="exp1_ann", device=cpu)
    # weights of another network
    with pytest.raises(WeightsFileError, match="holds network 'exp1_ann', not 'exp3_snn_mnist'"):
        evaluate_network(
            weights,
            NETWORKS["exp3_snn_mnist"],
            DeviceImages(test.images, test.labels, name="test", source="t", size=32),
            network_id="exp3_snn_mnist",
            device=cpu,
        )
    # an ANN's weights under an SNN spec with the same id: the parameter names differ
    other = tmp_path / "renamed.pt"
    torch.save({**saved, "network": "exp1_snn", "spec": NETWORKS["exp1_snn"]}, other)
    with pytest.raises(WeightsFileError, match="does not fit exp1_snn.*missing"):
        evaluate_network(other, NETWORKS["exp1_snn"], test, network_id="exp1_snn", device=cpu)
    # a test set whose images do not fit the network: the loaders' shape check names the file
    with pytest.raises(DatasetShapeError, match=r"t10k.*\(1, 28, 28\) do not fit exp2_cnn"):
        check_fits(NetworkSpec.from_config(NETWORKS["exp2_cnn"], "exp2_cnn"), test)


def test_best_val_needs_a_validation_set(tmp_path: Path, mnist_sets) -> None:
    net = build_network(NETWORKS["exp1_ann"], "exp1_ann")
    path = tmp_path / "w.pt"
    torch.save(
        {
            "network": "exp1_ann",
            "spec": NETWORKS["exp1_ann"],
            "epoch": 1,
            "state_dict": net.state_dict(),
            "best_val_state_dict": None,
            "best_val_epoch": None,
        },
        path,
    )
    with pytest.raises(WeightsFileError, match="no best-validation weights"):
        evaluate_network(
            path,
            NETWORKS["exp1_ann"],
            mnist_sets[2],
            network_id="exp1_ann",
            device=torch.device("cpu"),
            which="best_val",
        )


@pytest.mark.parametrize(
    "change", [{"beta": 0.5}, {"num_steps": 25}, {"threshold": 0.5}, {"input_size": 32}, {"kind": "ann"}]
)
def test_weights_trained_with_other_settings_are_refused(trained, change: dict) -> None:
    """A changed beta/num_steps/... no longer loads silently: the setting and both values are named."""
    weights, spec = trained["exp1_snn"]
    ((key, value),) = change.items()
    with pytest.raises(WeightsFileError) as error:
        load_weights(weights, {**spec, **change}, network_id="exp1_snn")
    message = str(error.value)
    assert f"{weights} was trained with other settings of exp1_snn" in message
    assert f"{key}: {spec.get(key)!r} in the weights file vs {value!r} in the config" in message
    assert message.count(" in the weights file vs ") == 1 and "Train exp1_snn again" in message


def test_training_only_settings_may_differ(trained, mnist_sets) -> None:
    weights, spec = trained["exp1_snn"]
    result = evaluate_network(
        weights,
        {**spec, "epochs": 7, "lr": 0.1, "batch_size": 64, "correct_rate": 0.9},
        mnist_sets[2],
        network_id="exp1_snn",
        device=torch.device("cpu"),
        seed=0,
    )
    assert result["accuracy"] > 0.5


def test_weights_without_settings_are_refused(tmp_path: Path, trained, mnist_sets) -> None:
    weights, spec = trained["exp1_ann"]
    bare = tmp_path / "bare.pt"
    torch.save({k: v for k, v in torch.load(weights, weights_only=True).items() if k != "spec"}, bare)
    with pytest.raises(WeightsFileError, match=r"bare.pt holds no training settings"):
        evaluate_network(bare, spec, mnist_sets[2], network_id="exp1_ann", device=torch.device("cpu"))


def test_unreadable_weights_message_gives_no_pytorch_advice(tmp_path: Path, trained, mnist_sets) -> None:
    """A pickle that torch.load's weights-only unpickler refuses: the message must not advise weights_only=False."""
    weights, spec = trained["exp1_ann"]
    foreign = tmp_path / "foreign.pt"
    torch.save({"network": "exp1_ann", "state_dict": {}, "extra": Path("x")}, foreign)  # a non-allowlisted global
    with pytest.raises(WeightsFileError) as error:
        evaluate_network(foreign, spec, mnist_sets[2], network_id="exp1_ann", device=torch.device("cpu"))
    message = str(error.value)
    assert message == (f"weights file {foreign} is unreadable (UnpicklingError); delete it and train exp1_ann again")
    assert error.value.__cause__ is None and error.value.__suppress_context__


@pytest.mark.parametrize("network", ["exp1_ann", "exp1_snn"])
def test_the_timed_test_pass_runs_no_operation_counting(trained, mnist_sets, monkeypatch, network: str) -> None:
    """Counting hooks add their cost to the test time and energy: the timed pass (inside the telemetry's test
    phase) runs with no counter and no forward hook on any module; the counts come from a pass of their own after
    it, on the same spikes (the same counts as counting in the timed pass would give)."""
    import spikebench.evaluation as evaluation

    weights, spec = trained[network]
    telemetry = RecordingTelemetry()
    passes: list[dict] = []
    real = evaluation.run_batches

    def spy(net, *args, counter=None, **kwargs):
        hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())
        passes.append({"phase": telemetry.calls[-1][0], "counter": counter is not None, "hooks": hooks})
        return real(net, *args, counter=counter, **kwargs)

    monkeypatch.setattr(evaluation, "run_batches", spy)
    result = evaluate_network(
        weights, spec, mnist_sets[2], network_id=network, device=torch.device("cpu"), seed=0, telemetry=telemetry
    )
    assert passes[0] == {"phase": "test", "counter": False, "hooks": 0}  # the timed pass
    assert passes[1]["phase"] == "idle" and passes[1]["counter"] and passes[1]["hooks"] > 0  # the counting pass
    assert len(passes) == 2
    # the counting pass saw the same spikes: its counts equal those of a counter run over the timed pass's inputs
    from spikebench.opcounts import OperationCounter
    from spikebench.training import run_batches

    net, _ = evaluation.load_weights(weights, spec, network_id=network)
    counter = OperationCounter(net)
    run_batches(
        net,
        evaluation.as_spec(spec, network),
        mnist_sets[2],
        spec["batch_size"],
        torch.Generator().manual_seed(0),
        counter=counter,
    )
    counter.close()
    assert result["operations"] == counter.summary(counter.layer_rows())
    if spec["kind"] == "snn":
        assert result["lif_backend_used"] in ("eager", "numba", "eager+numba")
    else:
        assert result["lif_backend_used"] is None and result["lif_backend_used_null_reason"]
