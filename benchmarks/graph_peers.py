"""The peers of ``bench_graph.py``: the kNN graph + modularity as a user would write it without layermod.

Both build the paper's graph (cosine, each sample's k most similar other samples with the cosine as weight,
negative cosines clamped to 0 as layermod does, ``A = (A_dir + A_dir^T) / 2``) and score the class labels
as the communities with resolution 1:

* ``sklearn`` -- ``sklearn.neighbors.kneighbors_graph(X, k, metric="cosine", mode="distance",
  include_self=False)``, weights ``1 - distance``, ``(A + A.T) / 2``, then ``networkx.from_scipy_sparse_array``
  and ``networkx.community.modularity`` (building the community sets is part of the timed work).
* ``faiss`` -- ``faiss.IndexFlatIP`` (exact inner product) on the L2-normalised float32 rows, searched for
  k + 1 neighbours; each row's own index is dropped (where the sample is not among its k + 1 results, e.g.
  behind exact duplicates, the last result is dropped instead), a scipy sparse graph, ``(A + A.T) / 2``, and
  :func:`sparse_modularity` (numpy ``bincount`` sums).

Neither breaks ties the way layermod does (it shares tied candidates): on features without exact ties the
graphs agree except at float32 near-ties. scikit-learn and faiss are optional; :func:`available` says which
peers can run here. faiss runs with ``threads`` OpenMP threads (the benchmark passes torch's thread count).
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.sparse as sp

PEERS = ("sklearn", "faiss")
LABELS = {"sklearn": "sklearn+networkx", "faiss": "faiss+bincount"}
INSTALL = {"sklearn": "scikit-learn", "faiss": "faiss-cpu"}


def available() -> dict[str, str | None]:
    """Peer name -> version of the library it needs, or None where that library is not installed."""
    out: dict[str, str | None] = {}
    try:
        import sklearn
        out["sklearn"] = sklearn.__version__
    except ImportError:
        out["sklearn"] = None
    try:
        import faiss
        out["faiss"] = faiss.__version__
    except ImportError:
        out["faiss"] = None
    return out


def sparse_modularity(adjacency, labels: np.ndarray) -> float:
    """Modularity (resolution 1) of a symmetric sparse adjacency with ``labels`` (N,) as the communities.

    ``Q = sum_c [e_c / 2W - (S_c / 2W)^2]``, where ``2W = sum_ij A_ij``, ``e_c`` is the sum of ``A_ij`` over
    ``i, j`` both in ``c`` and ``S_c`` the sum of the degrees in ``c``; two ``bincount`` calls over the
    stored entries, in float64.
    """
    a = sp.coo_array(adjacency)
    _, comm = np.unique(np.asarray(labels), return_inverse=True)
    n_comm = int(comm.max()) + 1
    w = a.data.astype(np.float64)
    two_w = w.sum()
    row_c, col_c = comm[a.row], comm[a.col]
    inside = row_c == col_c
    e = np.bincount(row_c[inside], weights=w[inside], minlength=n_comm)
    s = np.bincount(row_c, weights=w, minlength=n_comm)
    return float(np.sum(e / two_w - (s / two_w) ** 2))


def communities(labels: np.ndarray) -> list[set[int]]:
    """The class labels as networkx communities: one set of node indices per distinct label."""
    labels = np.asarray(labels)
    return [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]


def sklearn_pipeline(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, sp.csr_matrix]:
    """scikit-learn's kNN graph + networkx's modularity. Returns (Q, symmetric sparse adjacency)."""
    from sklearn.neighbors import kneighbors_graph

    dist = kneighbors_graph(x, k, metric="cosine", mode="distance", include_self=False)
    a = dist.copy()
    a.data = np.maximum(1.0 - a.data, 0.0)
    a = (a + a.T) / 2
    graph = nx.from_scipy_sparse_array(a)
    q = nx.community.modularity(graph, communities(labels), weight="weight", resolution=1.0)
    return float(q), a


def faiss_pipeline(x: np.ndarray, labels: np.ndarray, k: int, threads: int | None = None
                   ) -> tuple[float, sp.csr_array]:
    """faiss's exact inner-product search + a bincount modularity. Returns (Q, symmetric sparse adjacency)."""
    import faiss

    saved = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads or saved)
    try:
        xn = np.array(x, dtype=np.float32, order="C", copy=True)
        faiss.normalize_L2(xn)
        index = faiss.IndexFlatIP(xn.shape[1])
        index.add(xn)
        sims, idx = index.search(xn, k + 1)
        del index
    finally:
        faiss.omp_set_num_threads(saved)
    n = xn.shape[0]
    own = idx == np.arange(n)[:, None]
    own[~own.any(axis=1), k] = True  # the sample is not among its own k + 1 results: drop the last one
    keep = ~own
    cols = idx[keep].reshape(n, k)
    weights = np.maximum(sims[keep], 0.0).reshape(n, k)
    a = sp.csr_array((weights.ravel(), (np.repeat(np.arange(n), k), cols.ravel())), shape=(n, n))
    a = (a + a.T) / 2
    return sparse_modularity(a, labels), a


# ------------------------------------------------------------------------------------------- report
def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _cell(r: dict) -> str:
    return f"N={r['n']} D={r['d']}"


def print_peers(rows: list[dict], q_tol: float, near_tie: float, busy_warn: float, busy_min_s: float) -> None:
    """The peers' table (one line per size and peer) and, per peer, where it is faster than layermod."""
    ran = [(r, name, p) for r in rows for name, p in r["peers"].items() if p is not None]
    print("\nPeers: the same graph and Q without layermod, on the same features "
          "(t/ours > 1: layermod is faster; |dQ| and edges against layermod's graph)")
    if not ran:
        print("  none run")
        return
    head = (f"{'N':>5} {'D':>5} {'peer':<16} {'t[s]':>9} {'t_ours[s]':>9} {'t/ours':>8} {'Q_peer':>9} "
            f"{'|dQ|':>8} {'same_edges':>10} {'max_w_diff':>10} {'rows_off':>8} {'gap64':>8} {'busy':>5}")
    print(head)
    print("-" * len(head))
    for r, name, p in ran:
        print(f"{r['n']:>5} {r['d']:>5} {LABELS[name]:<16} {p['t']:>9.4f} {p['t_ours']:>9.4f} "
              f"{p['t_over_ours']:>7.2f}x {p['q']:>9.6f} {p['dq']:>8.1e} {str(p['edges_identical']):>10} "
              f"{p['max_weight_diff']:>10.1e} {p['rows_differing']:>8d} "
              f"{_fmt(p['min_kth_gap64_differing'], '.1e'):>8} {_fmt(p['other_load'], '.1f'):>5}")
    print("t_ours = layermod timed interleaved with that peer (faiss: the run of the main table; sklearn: its own); "
          "busy = CPU cores used by other processes meanwhile")
    noisy = [(r, name) for r, name, p in ran
             if (p["other_load"] or 0.0) > busy_warn and (p["other_cpu_s"] or 0.0) > busy_min_s]
    if noisy:
        where = ", ".join(f"{LABELS[n]} at {_cell(r)}" for r, n in noisy)
        print(f"WARNING: other processes used the CPU during {where}; those timings are unreliable")
    for name in PEERS:
        mine = [(r, p) for r, n, p in ran if n == name]
        if not mine:
            continue
        faster = [(r, p) for r, p in mine if p["t_over_ours"] < 1.0]
        ratios = [p["t_over_ours"] for _, p in mine]
        if faster:
            where = ", ".join(f"{_cell(r)} (t/ours {p['t_over_ours']:.2f}x)" for r, p in faster)
            verdict = f"faster than layermod at {where}; slower elsewhere" if len(faster) < len(mine) else \
                f"faster than layermod at every measured size: {where}"
        else:
            verdict = (f"faster than layermod nowhere (t/ours {min(ratios):.2f}x to {max(ratios):.2f}x "
                       f"over {len(mine)} sizes)")
        print(f"  {LABELS[name]}: {verdict}")
        off = [(r, p) for r, p in mine if p["dq"] > q_tol or not p["edges_identical"]]
        if not off:
            print(f"    Q within {q_tol:g} of layermod's and identical edges at every size")
        for r, p in off:
            gap = p["min_kth_gap64_differing"]
            why = ("no node row differs beyond the weight tolerance" if gap is None else
                   f"smallest float64 k-th/(k+1)-th gap among them {gap:.1e}: "
                   + ("float32 near-ties" if gap < near_tie else "NOT near-ties: look for a bug"))
            print(f"    {_cell(r)}: |dQ| = {p['dq']:.1e}, {p['rows_differing']} node rows differ; {why}")
