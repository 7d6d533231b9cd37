"""Markdown tables for the reports (run report, EKT experiment, bench, config reference)."""

from __future__ import annotations


def table(header: list[str], rows: list[list], right: int = 0) -> list[str]:
    """The lines of a Markdown table; the last ``right`` columns (the numbers) are right-aligned."""
    align = ["---"] * (len(header) - right) + ["---:"] * right
    return [_row(header), _row(align)] + [_row(row) for row in rows]


def interval(summary: dict, digits: int = 3) -> str:
    """A pass@k summary as ``mean [low, high]`` (its 95% interval)."""
    if summary.get("problems") == 0:  # summarize_passk: every problem had fewer than k samples, mean is NaN
        return "n/a (every problem has n < k)"
    low, high = summary["ci95"]
    return f"{summary['mean']:.{digits}f} [{low:.2f}, {high:.2f}]"


def _row(cells: list) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"
