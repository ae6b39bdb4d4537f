"""A saved runs view shipped with every editdecay experiment: the MLflow UI (3.17) keeps saved views
as experiment tags ``mlflow.sharedViewState.<id>`` holding ``{name, createdAt, updatedAt, state}``,
where ``state`` is the JSON of the runs page's search facets and UI state (the same object its
"Save view" button writes). Opening it from the "Views" menu, or from :func:`view_url`, shows the
columns a survival comparison needs, sorted by ``survival.efr`` and grouped by ``finetune.layers``.

No mlflow import: this only builds the tag, ``runs.py`` sets it.
"""

from __future__ import annotations

import json

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
COMPARE_VIEW_ID = "editdecay-compare-survival"
COMPARE_VIEW_NAME = "editdecay: survival by FT layers"

# The runs table's columns: what ran (params, with the resolved values next to the config's), what it gave.
# Few enough to fit one screen beside the Dataset column.
COMPARE_PARAMS = ("edit.method", "finetune.method", "finetune.layers", "edit.num_edits", "resolved.finetune.lr",
                  "resolved.edit.layers")
COMPARE_METRICS = ("survival.efr", "edit.es", "ft.es", "ft.ds.acc")


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the UI's canonical column key


def compare_view_state() -> dict:
    return {
        # search facets
        "searchFilter": "", "orderByKey": _column("metrics", "survival.efr"), "orderByAsc": True,
        "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs", "datasetsFilter": [],
        # UI state
        "selectedColumns": [_column("attributes", "User"), _column("attributes", "Dataset"),
                            *(_column("params", p) for p in COMPARE_PARAMS),
                            *(_column("metrics", m) for m in COMPARE_METRICS)],
        "runsExpanded": {}, "runsPinned": [], "runsHidden": [], "runListHidden": False,
        "isAccordionReordered": False, "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "param", "groupByData": "finetune.layers"}]},
        "groupsExpanded": {},
    }


def compare_view_tag(created_ms: int) -> tuple[str, str]:
    """``(tag key, tag value)`` of the saved view."""
    envelope = {"name": COMPARE_VIEW_NAME, "createdAt": created_ms, "updatedAt": created_ms,
                "state": json.dumps(compare_view_state(), separators=(",", ":"))}
    return VIEW_TAG_PREFIX + COMPARE_VIEW_ID, json.dumps(envelope, separators=(",", ":"))


def view_url(server: str, experiment_id: str, charts: bool = False) -> str:
    """The experiment's runs page opened on the saved view (``charts``: the chart view)."""
    mode = "&compareRunsMode=CHART" if charts else ""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={COMPARE_VIEW_ID}{mode}"
