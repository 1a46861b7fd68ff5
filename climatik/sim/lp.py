"""Linear programs for HiGHS, built from numpy arrays (the twin's bounds use it).

`Model` collects columns, rows and matrix entries a block at a time (broadcast numpy arrays, no
per-entry Python), hands the LP to HiGHS through `highspy` in its column-wise form, and returns
HiGHS's status, optimum, solution and row duals. HiGHS runs silent and single-threaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

OPTIMAL = "Optimal"
FEASIBLE_POINT = 2
"""HiGHS's solution status of a feasible point (kSolutionStatusFeasible)."""


@dataclass(frozen=True, slots=True)
class LpSolution:
    """What HiGHS returned for one LP."""

    status: str
    """HiGHS's model status in words ("Optimal", "Infeasible", ...)."""
    objective: float
    x: FloatArray
    row_duals: FloatArray
    mip_gap: float = 0.0
    """0 for an LP: its optimum is proven, not bracketed."""

    @property
    def optimal(self) -> bool:
        """Whether HiGHS proved the optimum."""
        return self.status == OPTIMAL


class _QuietHighs(highspy.Highs):
    """HiGHS with its console log switched off before its first call.

    The plain constructor enables callbacks, which already prints HiGHS's banner on stdout:
    `climatik simulate` prints its table there.
    """

    def enableCallbacks(self) -> None:  # noqa: N802  (HiGHS's own name)
        self.setOptionValue("output_flag", False)
        super().enableCallbacks()  # type: ignore[no-untyped-call]


def new_highs() -> highspy.Highs:
    """A silent, single-threaded HiGHS (the LPs here are small; threads only add overhead)."""
    highs = _QuietHighs()  # type: ignore[no-untyped-call]
    highs.setOptionValue("output_flag", False)  # where the constructor did not call the hook
    highs.setOptionValue("threads", 1)
    return highs


class Model:
    """An LP built a block of columns and rows at a time (the matrix as COO triplets)."""

    def __init__(self) -> None:
        self._cost: list[FloatArray] = []
        self._col_lower: list[FloatArray] = []
        self._col_upper: list[FloatArray] = []
        self._integer: list[npt.NDArray[np.bool_]] = []
        self._row_lower: list[FloatArray] = []
        self._row_upper: list[FloatArray] = []
        self._entries: list[tuple[IntArray, IntArray, FloatArray]] = []
        self.n_col = 0
        self.n_row = 0

    def cols(
        self,
        shape: tuple[int, ...],
        *,
        cost: npt.ArrayLike = 0.0,
        lower: npt.ArrayLike = 0.0,
        upper: npt.ArrayLike = np.inf,
        integer: bool = False,
    ) -> IntArray:
        """New variables, numbered in an array of `shape` (whole numbers where `integer`)."""
        index = self.n_col + np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        self.n_col += index.size
        self._integer.append(np.full(index.size, integer))
        for store, value in (
            (self._cost, cost),
            (self._col_lower, lower),
            (self._col_upper, upper),
        ):
            store.append(np.broadcast_to(np.asarray(value, dtype=np.float64), shape).ravel())
        return index

    def rows(
        self, shape: tuple[int, ...], *, lower: npt.ArrayLike = -np.inf, upper: npt.ArrayLike
    ) -> IntArray:
        """New constraints lower <= row <= upper, numbered in an array of `shape`."""
        index = self.n_row + np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        self.n_row += index.size
        self._row_lower.append(np.broadcast_to(np.asarray(lower, np.float64), shape).ravel())
        self._row_upper.append(np.broadcast_to(np.asarray(upper, np.float64), shape).ravel())
        return index

    def coef(self, rows: npt.ArrayLike, cols: npt.ArrayLike, vals: npt.ArrayLike) -> None:
        """Matrix entries, broadcast together; zeros are left out."""
        row_b, col_b, val_b = np.broadcast_arrays(
            np.asarray(rows, dtype=np.int64),
            np.asarray(cols, dtype=np.int64),
            np.asarray(vals, dtype=np.float64),
        )
        keep = val_b != 0.0
        self._entries.append((row_b[keep], col_b[keep], val_b[keep]))

    def solve(
        self,
        *,
        maximize: bool = False,
        time_limit_s: float | None = None,
        node_limit: int | None = None,
        feasibility_tolerance: float | None = None,
        start: FloatArray | None = None,
    ) -> LpSolution:
        """Hand the model to HiGHS and return its status, optimum and solution.

        A model with integer columns is a MIP: with `time_limit_s` HiGHS may stop before it
        proves the optimum, and the best point found comes back with its relative gap; so may
        it after `node_limit` branch-and-bound nodes (a limit that, unlike time, gives the same
        answer on a busy machine); `feasibility_tolerance` tightens how far a MIP's point may
        miss its rows (HiGHS's 1e-6 lets it drop a request of that size, or call a model with
        one infeasible); `start` is a feasible point to begin from (every column's value)."""
        highs = new_highs()
        if time_limit_s is not None:
            highs.setOptionValue("time_limit", float(time_limit_s))
        if node_limit is not None:
            highs.setOptionValue("mip_max_nodes", int(node_limit))
        if feasibility_tolerance is not None:
            highs.setOptionValue("mip_feasibility_tolerance", float(feasibility_tolerance))
        highs.passModel(self.to_highs(maximize=maximize))
        if start is not None:
            point = highspy.HighsSolution()
            point.col_value = np.asarray(start, dtype=np.float64)
            point.value_valid = True
            highs.setSolution(point)
        highs.run()
        return solution_of(highs, mip=any(flags.any() for flags in self._integer))

    def to_highs(self, *, maximize: bool) -> highspy.HighsLp:
        """The LP in HiGHS's column-wise form."""
        rows = np.concatenate([e[0] for e in self._entries])
        cols = np.concatenate([e[1] for e in self._entries])
        vals = np.concatenate([e[2] for e in self._entries])
        order = np.lexsort((rows, cols))
        starts = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=self.n_col))])
        lp = highspy.HighsLp()
        lp.num_col_ = self.n_col
        lp.num_row_ = self.n_row
        lp.sense_ = highspy.ObjSense.kMaximize if maximize else highspy.ObjSense.kMinimize
        lp.col_cost_ = np.concatenate(self._cost)
        lp.col_lower_ = _finite(np.concatenate(self._col_lower))
        lp.col_upper_ = _finite(np.concatenate(self._col_upper))
        lp.row_lower_ = _finite(np.concatenate(self._row_lower))
        lp.row_upper_ = _finite(np.concatenate(self._row_upper))
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.num_col_ = self.n_col
        lp.a_matrix_.num_row_ = self.n_row
        lp.a_matrix_.start_ = starts.astype(np.int32)
        lp.a_matrix_.index_ = rows[order].astype(np.int32)
        lp.a_matrix_.value_ = vals[order]
        integer = np.concatenate(self._integer) if self._integer else np.zeros(0, dtype=bool)
        if integer.any():
            kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
            lp.integrality_ = [kinds[int(flag)] for flag in integer]
        return lp


def _finite(values: npt.ArrayLike) -> FloatArray:
    """HiGHS's infinity for numpy's."""
    arr = np.asarray(values, dtype=np.float64).copy()
    arr[np.isposinf(arr)] = highspy.kHighsInf
    arr[np.isneginf(arr)] = -highspy.kHighsInf
    return arr


def solution_of(highs: highspy.Highs, *, mip: bool = False) -> LpSolution:
    """HiGHS's outcome; a `mip` also carries its relative gap (0 once proven)."""
    status = highs.modelStatusToString(highs.getModelStatus())
    solution = highs.getSolution()
    info = highs.getInfo()
    optimal = status == OPTIMAL
    # A MIP stopped by its time limit still returns its best feasible point, bracketed.
    feasible = optimal or (mip and info.primal_solution_status == FEASIBLE_POINT)
    return LpSolution(
        status=status,
        objective=float(info.objective_function_value) if feasible else float("nan"),
        x=np.asarray(solution.col_value, dtype=np.float64),
        row_duals=np.asarray(solution.row_dual, dtype=np.float64),
        # inf where the search stopped before it had a lower bound (its root LP).
        mip_gap=float(max(info.mip_gap, 0.0)) if mip and feasible else 0.0,
    )
