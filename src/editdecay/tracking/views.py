"""A saved runs view shipped with every editdecay experiment: the MLflow UI (3.17) keeps saved views
as experiment tags ``mlflow.sharedViewState.<id>`` holding ``{name, createdAt, updatedAt, state}``,
where ``state`` is the JSON of the runs page's search facets and UI state (the same object its
"Save view" button writes). Opening it from the "Views" menu, or from :func:`view_url`, shows the
columns a survival comparison needs, sorted by ``survival.efr``, FT-none runs (nothing to survive)
filtered out, the table grouped by ``finetune.method`` and ``finetune.layers`` (so a group never
averages LoRA with full fine-tuning), and a chart view that opens on parallel coordinates from the
grid's params to ``survival.efr``, then its bars (``compareRunCharts``; without them the UI makes
one chart per metric in alphabetical order). The charts show runs, not groups
(``useGroupedValuesInCharts`` off): MLflow 3.17 draws no parallel coordinates over grouped string
params ("does not support aggregated string values"); each run keeps its group's colour family.
Checked in headless Chromium against an MLflow 3.17.2 server.

No mlflow import: this only builds the tag, ``runs.py`` sets it.
"""

from __future__ import annotations

import json

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
COMPARE_VIEW_ID = "editdecay-compare-survival"
COMPARE_VIEW_NAME = "editdecay: survival by FT method and layers"

# The runs table's columns: what ran (params, with the resolved values next to the config's), what it gave.
# Few enough to fit one screen beside the Dataset column.
COMPARE_PARAMS = ("edit.method", "finetune.method", "finetune.layers", "edit.num_edits", "resolved.finetune.lr",
                  "resolved.edit.layers")
COMPARE_METRICS = ("survival.efr", "edit.es", "ft.es", "ft.ds.acc")
GROUP_BY = ("finetune.method", "finetune.layers")
SEARCH_FILTER = "params.`finetune.method` != 'none'"  # KE-only trials: no fine-tuning, no survival
# The parallel-coordinates axes: what varies in a sweep, then the answer.
PARALLEL_PARAMS = ("edit.method", "finetune.method", "finetune.layers", "edit.num_edits")
MODEL_SECTION, SYSTEM_SECTION = "Model metrics", "System metrics"  # the UI's section names (metrics without / and system/*)


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the UI's canonical column key


def _charts() -> tuple[list[dict], list[dict]]:
    """The chart view's cards and sections, in the UI's serialised form (RunsChartsCardConfig):
    parallel coordinates over the grid's params ending in ``survival.efr``, then its bars."""
    model, system = "editdecay-section-model", "editdecay-section-system"
    base = {"deleted": False, "isGenerated": False, "metricSectionId": model, "runsCountToCompare": 100}
    charts = [
        {**base, "uuid": "editdecay-parallel-efr", "type": "PARALLEL", "displayName": "survival.efr by grid point",
         "selectedParams": list(PARALLEL_PARAMS), "selectedMetrics": ["survival.efr"], "showAllRuns": True},
        {**base, "uuid": "editdecay-bar-efr", "type": "BAR", "metricKey": "survival.efr", "displayName": "survival.efr",
         "dataAccessKey": "survival.efr"},
    ]
    sections = [{"uuid": uuid, "name": name, "display": True, "isReordered": False, "deleted": False, "isGenerated": True}
                for uuid, name in ((model, MODEL_SECTION), (system, SYSTEM_SECTION))]
    return charts, sections


def compare_view_state() -> dict:
    charts, sections = _charts()
    return {
        # search facets
        "searchFilter": SEARCH_FILTER, "orderByKey": _column("metrics", "survival.efr"), "orderByAsc": True,
        "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs", "datasetsFilter": [],
        # UI state
        "selectedColumns": [_column("attributes", "User"), _column("attributes", "Dataset"),
                            *(_column("params", p) for p in COMPARE_PARAMS),
                            *(_column("metrics", m) for m in COMPARE_METRICS)],
        "runsExpanded": {}, "runsPinned": [], "runsHidden": [], "runListHidden": False,
        "isAccordionReordered": False, "useGroupedValuesInCharts": False, "hideEmptyCharts": True,
        "groupBy": {"aggregateFunction": "average",
                    "groupByKeys": [{"mode": "param", "groupByData": key} for key in GROUP_BY]},
        "groupsExpanded": {},
        "compareRunCharts": charts, "compareRunSections": sections,
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
