"""Reports: the per-class table now; HTML reports and comparisons build on it."""

from transferlab.report.table import per_class_rows, per_class_table, render_text

__all__ = ["per_class_rows", "per_class_table", "render_text"]
