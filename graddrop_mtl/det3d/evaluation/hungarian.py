"""Maximum-weight bipartite matching with the same choices as Waymo's ``TYPE_HUNGARIAN`` matcher (Numba).

Waymo's matcher (``metrics/matcher.cc``) fills an ``n x n`` integer weight matrix (``n = max(#predictions,
#ground truths)``, padded with zeros) with the quantised IoU ``round(iou * 1e6)`` of every pair that can match (IoU
>= the class threshold) and 0 elsewhere, then solves it with the Kuhn-Munkres algorithm of ``metrics/hungarian.cc``
(vertex labels ``lx``/``ly``, alternating trees grown from the lowest unmatched row, the equality-subgraph
neighbours of the tree explored in insertion order). An assigned pair that cannot match (a padding row or column,
or an IoU below the threshold) is discarded afterwards.

When several matchings have the same total weight (duplicated boxes, a box flipped by 180 degrees, equal IoUs),
which one is returned decides which prediction becomes the true positive (and so the heading accuracy) and which
ground truth stays unmatched (and so the difficulty level of a false negative). :func:`kuhn_munkres` therefore
grows its trees in exactly that order rather than using another optimal assignment solver.

One shortcut keeps the result identical and makes it fast: a row whose weights are all 0 (a prediction that can
match nothing, or a padding row) is matched by that algorithm, when its turn comes, to the lowest free column
without changing any label (its equality neighbours are the columns of label 0 in increasing order, free columns
always have label 0, and the first free one is reached before the neighbour list runs out); the loop does that
directly instead of growing the tree.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def kuhn_munkres(w):
    """Row -> column assignment (int64 [n]) maximising the total weight of the non-negative int64 matrix ``w``.

    Ties between optimal assignments are broken as in waymo-open-dataset's ``Hungarian()``.
    """
    n = w.shape[0]
    lx = np.zeros(n, np.int64)
    ly = np.zeros(n, np.int64)
    for i in range(n):
        m = 0
        for j in range(n):
            if w[i, j] > m:
                m = w[i, j]
        lx[i] = m
    row_match = np.full(n, -1, np.int64)
    col_match = np.full(n, -1, np.int64)
    tree_rows = np.empty(n, np.int64)          # S: rows of the alternating tree, S[0] is the root
    tree_cols = np.empty(n, np.int64)          # T: columns of the tree, in insertion order
    tree_cols_parent = np.empty(n, np.int64)   # index into S of each T's parent
    in_tree_cols = np.zeros(n, np.bool_)
    nbr = np.empty(n, np.int64)                # N: equality neighbours of S, in insertion order
    nbr_parent = np.empty(n, np.int64)
    in_nbr = np.zeros(n, np.bool_)
    first_free_col = 0
    root = 0
    while True:
        while root < n and row_match[root] != -1:
            root += 1
        if root == n:
            break
        while col_match[first_free_col] != -1:
            first_free_col += 1
        if lx[root] == 0:
            # All-zero row (see the module docstring): the lowest free column, labels unchanged.
            row_match[root] = first_free_col
            col_match[first_free_col] = root
            continue
        # Grow an alternating tree from `root`.
        n_rows = 1
        tree_rows[0] = root
        n_cols = 0
        n_nbr = 0
        for j in range(n):
            if lx[root] + ly[j] == w[root, j]:
                nbr[n_nbr] = j
                nbr_parent[n_nbr] = 0
                in_nbr[j] = True
                n_nbr += 1
        ptr = 0
        while True:
            if n_nbr == n_cols:
                # All neighbours are in the tree: improve the labelling, then recompute the neighbours.
                a = np.iinfo(np.int64).max
                for ii in range(n_rows):
                    i = tree_rows[ii]
                    for j in range(n):
                        if not in_tree_cols[j]:
                            slack = lx[i] + ly[j] - w[i, j]
                            if slack < a:
                                a = slack
                for ii in range(n_rows):
                    lx[tree_rows[ii]] -= a
                for k in range(n_cols):
                    ly[tree_cols[k]] += a
                for k in range(n_nbr):
                    in_nbr[nbr[k]] = False
                n_nbr = 0
                for ii in range(n_rows):
                    i = tree_rows[ii]
                    for j in range(n):
                        if not in_nbr[j] and lx[i] + ly[j] == w[i, j]:
                            nbr[n_nbr] = j
                            nbr_parent[n_nbr] = ii
                            in_nbr[j] = True
                            n_nbr += 1
                ptr = 0
            # The first neighbour not yet in the tree.
            while in_tree_cols[nbr[ptr]]:
                ptr += 1
            j = nbr[ptr]
            tree_cols[n_cols] = j
            tree_cols_parent[n_cols] = nbr_parent[ptr]
            in_tree_cols[j] = True
            n_cols += 1
            z = col_match[j]
            if z == -1:
                # Augment along the path from column j back to the root.
                for k in range(n_cols - 1, -1, -1):
                    if tree_cols[k] == j:
                        ii = tree_cols_parent[k]
                        i = tree_rows[ii]
                        previous = row_match[i]
                        row_match[i] = j
                        col_match[j] = i
                        j = previous
                        if ii == 0:
                            break
                break
            tree_rows[n_rows] = z
            n_rows += 1
            for jj in range(n):
                if not in_nbr[jj] and lx[z] + ly[jj] == w[z, jj]:
                    nbr[n_nbr] = jj
                    nbr_parent[n_nbr] = n_rows - 1
                    in_nbr[jj] = True
                    n_nbr += 1
        for k in range(n_cols):
            in_tree_cols[tree_cols[k]] = False
        for k in range(n_nbr):
            in_nbr[nbr[k]] = False
    return row_match
