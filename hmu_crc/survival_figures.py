"""Pictures of a survival analysis: Kaplan-Meier curves with numbers at risk, and a forest plot of a Cox model.

As in `hmu_crc.figures`, figures are `matplotlib.figure.Figure` objects saved through the Agg canvas, never
through `pyplot`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hmu_crc.figures import DPI

if TYPE_CHECKING:
    from hmu_crc.survival import CoxResult, SplitResult

logger = logging.getLogger(__name__)

GROUP_COLORS = ("#c44e52", "#4c72b0")
"""Line colours of the high and the low group."""

SYNTHETIC_TITLE = "SYNTHETIC SAMPLE: these numbers mean nothing"
"""Printed above every figure of a run on the synthetic sample."""

_HR_LIMITS = (1e-3, 1e3)
"""Hazard ratios and their limits are drawn clipped to this range, so one wild estimate leaves the axis readable."""


def save_png(figure: Figure, path: Path) -> Path:
    """Write the figure as a PNG and free its artists."""
    figure.savefig(path, format="png", dpi=DPI)
    figure.clear()
    logger.debug("wrote %s", path)
    return path


def km_figure(split: SplitResult, *, synthetic: bool = False) -> Figure:
    """Kaplan-Meier curves of the groups (steps, 95% bands, censoring ticks) above a table of numbers at risk."""
    figure = Figure(figsize=(7.5, 6.0), layout="constrained")
    curves, at_risk = figure.subplots(2, 1, sharex=True, height_ratios=(4, 1))
    end = max(float(frame["os_months"].max()) for frame in split.groups.values())
    for (label, frame), color in zip(split.groups.items(), GROUP_COLORS, strict=True):
        fitter = split.fitters[label]
        times = fitter.survival_function_.index.to_numpy()
        band = fitter.confidence_interval_survival_function_.to_numpy()
        deaths = int(frame["os_event"].sum())
        legend = f"{label}: {len(frame)} patients, {deaths} deaths"
        curves.step(times, fitter.survival_function_.iloc[:, 0], where="post", color=color, label=legend)
        curves.fill_between(times, band[:, 0], band[:, 1], step="post", color=color, alpha=0.15, linewidth=0)
        censored = frame.loc[frame["os_event"] == 0, "os_months"].to_numpy()
        survival = fitter.survival_function_at_times(censored).to_numpy()
        curves.plot(censored, survival, linestyle="none", marker="|", markersize=8, color=color)
    ticks = MaxNLocator(nbins=6, integer=True).tick_values(0, end)
    ticks = ticks[(ticks >= 0) & (ticks <= end)]
    curves.set_xlim(0, end * 1.03)
    curves.set_ylim(0, 1.03)
    curves.set_xticks(ticks)
    curves.set_ylabel("overall survival probability")
    curves.set_title(f"Overall survival by {split.class_name} fraction, log-rank p = {split.p_value:.3g}")
    curves.grid(alpha=0.3)
    curves.legend(loc="lower left", fontsize=8)
    _numbers_at_risk(at_risk, split, ticks)
    if synthetic:
        figure.suptitle(SYNTHETIC_TITLE, color="#c44e52", fontweight="bold")
    return figure


def _numbers_at_risk(axes: Axes, split: SplitResult, ticks: np.ndarray) -> None:
    """Patients still followed (time >= t) at each tick, one row per group."""
    rows = len(split.groups)
    for row, (frame, color) in enumerate(zip(split.groups.values(), GROUP_COLORS, strict=True)):
        for tick in ticks:
            count = int((frame["os_months"] >= tick).sum())
            axes.text(tick, rows - 1 - row, str(count), ha="center", va="center", color=color, fontsize=9)
    axes.set_ylim(-0.6, rows - 0.4)
    axes.set_yticks(range(rows), labels=list(split.groups)[::-1], fontsize=8)
    axes.tick_params(axis="y", length=0, pad=10)
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    axes.set_title("number at risk", loc="left", fontsize=9)
    axes.set_xlabel("months")


def forest_figure(cox: CoxResult, *, synthetic: bool = False) -> Figure:
    """Hazard ratios with 95% confidence intervals on a log axis, their numbers written on the right."""
    table = cox.table
    rows = len(table)
    figure = Figure(figsize=(8.5, 1.6 + 0.42 * rows), layout="constrained")
    axes = figure.add_subplot()
    y = np.arange(rows)[::-1]
    ratio, lower, upper = (
        np.clip(table[c].to_numpy(), *_HR_LIMITS) for c in ("hazard_ratio", "hr_lower_95", "hr_upper_95")
    )
    axes.errorbar(ratio, y, xerr=[ratio - lower, upper - ratio], fmt="s", color="#4c72b0", capsize=3, markersize=5)
    axes.axvline(1.0, color="0.5", linestyle="--", linewidth=1)
    axes.set_xscale("log")
    axes.set_ylim(-0.7, rows - 0.3)
    axes.set_yticks(y, labels=[covariate.label for covariate in cox.covariates])
    axes.set_xlabel("hazard ratio (95% CI), log scale")
    axes.grid(axis="x", alpha=0.3)
    numbers = axes.twinx()
    numbers.set_ylim(axes.get_ylim())
    texts = [
        f"{r:.3g} ({lo:.3g} to {hi:.3g}), p {p:.2g}"
        for r, lo, hi, p in table[["hazard_ratio", "hr_lower_95", "hr_upper_95", "p_value"]].itertuples(index=False)
    ]
    numbers.set_yticks(y, labels=texts, fontsize=8)
    numbers.tick_params(axis="y", length=0)
    penalty = f", ridge penalizer {cox.penalizer:g}" if cox.penalizer else ""
    axes.set_title(
        f"Cox model: {cox.patients} patients, {cox.events} deaths, concordance {cox.concordance:.2f}{penalty}",
        fontsize=10,
    )
    if synthetic:
        figure.suptitle(SYNTHETIC_TITLE, color="#c44e52", fontweight="bold")
    return figure
