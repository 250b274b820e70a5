"""Generate the cce-sync Grafana dashboard from code (grafana-foundation-sdk).

Usage::

    python deploy/grafana/generate.py            # rewrite deploy/grafana/cce-sync.json
    python deploy/grafana/generate.py --check    # exit 1 when the committed JSON is stale

Edit this file, never the JSON. Every panel queries the Prometheus data source chosen in the
``datasource`` variable. Gauges read from Redis (targets, campaigns, queues, fleet-wide workers)
carry the same value on every host's endpoint, so the panels aggregate them with ``max``. The
per-process counters and histograms are summed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    StackingMode,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUTPUT_PATH = Path(__file__).with_name("cce-sync.json")

DASHBOARD_UID = "cce-sync-overview"

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

RATE_WINDOW = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a panel and the legend of its series."""

    expr: str
    legend: str


def _rate(selector: str) -> str:
    return f"rate({selector}[{RATE_WINDOW}])"


def _quantile(quantile: float, histogram: str, *, by: str = "") -> str:
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({quantile}, sum by ({group}) ({_rate(histogram + '_bucket')}))"


PanelBuilder = cogbuilder.Builder[dashboard_model.Panel]


def _targets(queries: list[Query]) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    ref_ids = "ABCDEFGH"
    return [
        prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref_ids[index])
        for index, query in enumerate(queries)
    ]


def _timeseries(
    title: str,
    description: str,
    queries: list[Query],
    *,
    unit: str,
    stacked: bool = False,
    width: int = 8,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .unit(unit)
        .height(8)
        .span(width)
        .fill_opacity(10)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(40)
    return panel


def _stat(title: str, description: str, query: Query, *, unit: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets([query]))
        .unit(unit)
        .height(8)
        .span(4)
        .graph_mode(BigValueGraphMode.AREA)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def _submission_panels() -> list[PanelBuilder]:
    failure_ratio = (
        'sum(increase(cce_sync_submissions_total{outcome="failed"}[15m]))'
        " / clamp_min(sum(increase(cce_sync_submissions_total[15m])), 1)"
    )
    return [
        _timeseries(
            "Submissions by outcome",
            "Sync submissions that reached a final outcome, per second.",
            [
                Query(
                    f"sum by (outcome) ({_rate('cce_sync_submissions_total')})",
                    "{{outcome}}",
                )
            ],
            unit="ops",
            stacked=True,
        ),
        _timeseries(
            "Failed submissions by reason",
            "Targets that failed without a sync, per second, by failure reason.",
            [
                Query(
                    "sum by (reason) "
                    f"""({_rate('cce_sync_submissions_total{outcome="failed"}')})""",
                    "{{reason}}",
                )
            ],
            unit="ops",
            stacked=True,
        ),
        _stat(
            "Failure ratio (15 min)",
            "Failed submissions over all final submissions in the last 15 minutes.",
            Query(failure_ratio, "failed"),
            unit="percentunit",
        ),
        _timeseries(
            "Syncs completed by result",
            "Accepted syncs followed to their end, per second.",
            [
                Query(
                    f"sum by (result) ({_rate('cce_sync_syncs_completed_total')})",
                    "{{result}}",
                )
            ],
            unit="ops",
            width=4,
        ),
    ]


def _api_panels() -> list[PanelBuilder]:
    return [
        _timeseries(
            "API requests by code",
            "CCE API calls per second by HTTP status, or connect_error, timeout and reset.",
            [Query(f"sum by (code) ({_rate('cce_sync_api_requests_total')})", "{{code}}")],
            unit="reqps",
            stacked=True,
        ),
        _timeseries(
            "API latency quantiles",
            "Quantiles of one CCE API call's duration, all operations together.",
            [
                Query(_quantile(0.5, "cce_sync_api_request_duration_seconds"), "p50"),
                Query(_quantile(0.9, "cce_sync_api_request_duration_seconds"), "p90"),
                Query(_quantile(0.99, "cce_sync_api_request_duration_seconds"), "p99"),
            ],
            unit="s",
        ),
        _timeseries(
            "API latency p99 by operation",
            "99th percentile of one CCE API call's duration per operation.",
            [
                Query(
                    _quantile(0.99, "cce_sync_api_request_duration_seconds", by="operation"),
                    "{{operation}}",
                )
            ],
            unit="s",
        ),
        _timeseries(
            "Throttling by source",
            "429 responses from CCE (api) and requests the shared rate limiter held back (local).",
            [Query(f"sum by (source) ({_rate('cce_sync_throttled_total')})", "{{source}}")],
            unit="ops",
        ),
        _timeseries(
            "Retries by reason",
            "Submissions scheduled for another attempt, per second.",
            [Query(f"sum by (reason) ({_rate('cce_sync_retries_total')})", "{{reason}}")],
            unit="ops",
            stacked=True,
        ),
        _timeseries(
            "Rate-limit wait",
            "How long the shared rate limiter made requests wait before sending.",
            [
                Query(_quantile(0.5, "cce_sync_rate_limit_wait_seconds"), "p50"),
                Query(_quantile(0.99, "cce_sync_rate_limit_wait_seconds"), "p99"),
            ],
            unit="s",
        ),
    ]


def _campaign_panels() -> list[PanelBuilder]:
    return [
        _timeseries(
            "Targets by state",
            "Targets of pending, running and paused campaigns, fleet-wide.",
            [Query("max by (state) (cce_sync_targets)", "{{state}}")],
            unit="short",
            stacked=True,
            width=6,
        ),
        _timeseries(
            "Campaigns by state",
            "Campaigns stored in Redis by state, fleet-wide.",
            [Query("max by (state) (cce_sync_campaigns)", "{{state}}")],
            unit="short",
            width=6,
        ),
        _timeseries(
            "Paused campaigns by reason",
            "Campaigns paused by a circuit breaker (auth, ...) or by an operator.",
            [Query("max by (reason) (cce_sync_campaigns_paused)", "{{reason}}")],
            unit="short",
            width=6,
        ),
        _timeseries(
            "Skipped targets by reason",
            "Pending targets that campaigns ended skipped without a submission, per second: "
            "error_budget, window_closed, cancelled or dry_run.",
            [
                Query(
                    f"sum by (reason) ({_rate('cce_sync_targets_skipped_total')})",
                    "{{reason}}",
                )
            ],
            unit="ops",
            stacked=True,
            width=6,
        ),
    ]


def _worker_panels() -> list[PanelBuilder]:
    return [
        _timeseries(
            "Queue depth",
            "Messages stored in each dramatiq queue: waiting, prefetched or being processed.",
            [Query("max by (queue_name) (cce_sync_queue_messages)", "{{queue_name}}")],
            unit="short",
        ),
        _timeseries(
            "Messages in progress",
            "dramatiq messages being processed, and delayed messages held in worker memory.",
            [
                Query(
                    "sum by (actor_name) (cce_sync_dramatiq_messages_inprogress)",
                    "{{actor_name}}",
                ),
                Query("sum(cce_sync_dramatiq_delayed_messages_inprogress)", "delayed"),
            ],
            unit="short",
        ),
        _timeseries(
            "Messages processed and errors",
            "dramatiq messages processed per second by actor, and those that raised.",
            [
                Query(
                    f"sum by (actor_name) ({_rate('cce_sync_dramatiq_messages_total')})",
                    "{{actor_name}}",
                ),
                Query(
                    f"sum by (actor_name) ({_rate('cce_sync_dramatiq_message_errors_total')})",
                    "errors {{actor_name}}",
                ),
            ],
            unit="ops",
        ),
        _timeseries(
            "Message duration p99",
            "99th percentile of one actor run per actor.",
            [
                Query(
                    _quantile(0.99, "cce_sync_dramatiq_message_duration_seconds", by="actor_name"),
                    "{{actor_name}}",
                )
            ],
            unit="s",
        ),
        _timeseries(
            "Worker processes",
            "Processes per scraped host, and processes fleet-wide with a recent heartbeat.",
            [
                Query("sum by (instance) (cce_sync_worker_processes)", "{{instance}}"),
                Query("max(cce_sync_dramatiq_workers)", "fleet (heartbeats)"),
            ],
            unit="short",
        ),
        _timeseries(
            "Dead letters",
            "Messages in dramatiq's dead-letter sets: actors that raised unexpectedly.",
            [Query("max by (queue_name) (cce_sync_dead_letter_messages)", "{{queue_name}}")],
            unit="short",
        ),
    ]


def _add_row(
    board: dashboard.Dashboard, title: str, panels: list[PanelBuilder]
) -> dashboard.Dashboard:
    # Grafana stores the panels of an expanded row after the row, at the top level. Panels nested
    # inside a row mean the row is collapsed.
    board = board.with_row(dashboard.Row(title).collapsed(False))
    for panel in panels:
        board = board.with_panel(panel)
    return board


def build_dashboard() -> dashboard.Dashboard:
    """Build the dashboard: one row each for submissions, the CCE API, campaigns and workers."""
    datasource = dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
    board = (
        dashboard.Dashboard("cce-sync")
        .uid(DASHBOARD_UID)
        .description("Fleet-wide CCE node pool sync campaigns: submissions, API, campaigns.")
        .tags(["cce-sync"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(datasource)
    )
    board = _add_row(board, "Submissions", _submission_panels())
    board = _add_row(board, "CCE API", _api_panels())
    board = _add_row(board, "Campaigns", _campaign_panels())
    return _add_row(board, "Workers and queues", _worker_panels())


def render() -> str:
    """Return the dashboard as JSON text with sorted keys, ending in a newline."""
    model = build_dashboard().build()
    for panel_id, panel in enumerate(model.panels or [], start=1):
        panel.id_val = panel_id
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the cce-sync Grafana dashboard.")
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare with the committed JSON instead of writing it; exit 1 when it differs",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT_PATH, help="JSON file to write")
    args = parser.parse_args(argv)

    text = render()
    if args.check:
        committed = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if committed != text:
            print(
                f"{args.output} is stale; run python deploy/grafana/generate.py",
                file=sys.stderr,
            )
            return 1
        return 0

    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
