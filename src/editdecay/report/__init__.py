"""``editdecay report``: a sweep's runs in MLflow → tables, paired tests, plots, findings, report.html.

Reads MLflow only, through :mod:`editdecay.tracking.read`; never trial internals. The tables,
comparisons and plots are registries (:mod:`editdecay.report.registry`): one entry each.
"""

from editdecay.report.build import ReportResult, write_report

__all__ = ["ReportResult", "write_report"]
