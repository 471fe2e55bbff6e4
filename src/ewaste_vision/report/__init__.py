"""Reports: metrics with confidence intervals, plots, and human-readable run reports.

`stats`, `plots` and `markdown` are shared by every task; each task keeps its own metrics module
(for example `classification`) that turns predictions into a JSON-ready dict.
"""
