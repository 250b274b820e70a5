"""The `cce-sync` command.

`submit`, `status`, `pause`, `resume`, `cancel`, `export` and `schema` are implemented here.
`worker`, `intake`, `simulator` and `demo` hand their arguments to the module that runs them,
which is imported only when that command runs.

Exit status: 0 on success, 2 for an invalid campaign document or invalid command-line usage,
1 for any other failure (Redis unreachable, unknown campaign, conflicting campaign ID...),
130 when interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

import redis

from worker.campaigns.document import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    DocumentError,
    Target,
    json_schema,
)
from worker.campaigns.store import (
    Campaign,
    CampaignNotFound,
    CampaignStore,
    InvalidStateChange,
)
from worker.settings import get_settings

logger = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_INVALID: Final = 2
EXIT_INTERRUPTED: Final = 130

#: Commands run by another module's `main()`, which parses the rest of the command line.
DELEGATED_COMMANDS: Final = {
    "worker": ("worker.runner", "run dramatiq workers, housekeeping and the /metrics endpoint"),
    "intake": ("producers.intake", "consume campaign documents from the cce-sync:intake stream"),
    "simulator": ("simulator.server", "run the CCE API simulator"),
    "demo": ("worker.demo", "run the whole pipeline on a private Redis and the simulator"),
}

#: Campaign states after which `status --watch` stops refreshing.
FINAL_CAMPAIGN_STATES: Final = frozenset({"finished", "cancelled"})

DEFAULT_WATCH_INTERVAL_SECONDS: Final = 2.0

EXPORT_COLUMNS: Final = (
    "region",
    "projectId",
    "clusterId",
    "nodePoolId",
    "state",
    "reason",
    "attempts",
    "jobId",
    "updatedAt",
)

_TARGET_COLUMNS: Final = (
    ("REGION", "region"),
    ("PROJECT", "projectId"),
    ("CLUSTER", "clusterId"),
    ("NODE POOL", "nodePoolId"),
    ("STATE", "state"),
    ("ATTEMPTS", "attempts"),
    ("JOB", "jobId"),
    ("REASON", "reason"),
)


class CommandError(Exception):
    """A command failed for a reason the user can act on; `exit_code` is the process status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Output helpers ---------------------------------------------------------------------------


def _print_json(value: object, stream: TextIO) -> None:
    stream.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _printable(value: object) -> str:
    """Return `value` as text with control characters escaped, so stored text cannot drive
    the terminal (documents are validated, but Redis may hold older or hand-written data)."""
    text = "" if value is None else str(value)
    return "".join(
        character if character.isprintable() else f"\\x{ord(character):02x}" for character in text
    )


def _format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(header) for header in headers]]
    cells += [[_printable(value) for value in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = [
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True))
        for row in cells
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _timestamp(seconds: float | None) -> str | None:
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _describe_redis(url: str) -> str:
    # Shows host, port and database only: a Redis URL may carry a password.
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or 6379}{parts.path or ''}"


# submit -----------------------------------------------------------------------------------


def _read_document(path: str, max_bytes: int) -> bytes:
    # One byte over the limit is enough for the size check to reject the document.
    try:
        if path == "-":
            return sys.stdin.buffer.read(max_bytes + 1)
        with open(path, "rb") as handle:
            return handle.read(max_bytes + 1)
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None


def _plan_rows(plan: Sequence[Target]) -> list[list[object]]:
    rows: list[list[object]] = []
    for target in plan:
        sync = target.sync
        login = "-"
        if sync.node_template is not None:
            login = "sshKey" if sync.node_template.login.ssh_key else "userPassword"
        nodes = f"{len(target.node_ids)} listed" if target.node_ids else "all"
        rows.append(
            [
                target.region,
                target.project_id,
                target.cluster_id,
                target.nodepool_id,
                nodes,
                sync.max_unavailable,
                login,
            ]
        )
    return rows


def _plan_json(plan: Sequence[Target]) -> list[dict[str, Any]]:
    return [
        {
            "region": target.region,
            "projectId": target.project_id,
            "clusterId": target.cluster_id,
            "nodePoolId": target.nodepool_id,
            "nodeIDs": list(target.node_ids) if target.node_ids else None,
            "maxUnavailable": target.sync.max_unavailable,
        }
        for target in plan
    ]


def _report_document_error(error: DocumentError, stream: TextIO) -> None:
    stream.write("cce-sync submit: invalid campaign document\n")
    stream.write("".join(f"  {line}\n" for line in str(error).splitlines()))


def _command_submit(args: argparse.Namespace) -> int:
    from producers.submit import submit
    from worker.campaigns.secrets import SecretKeyError
    from worker.campaigns.store import CampaignConflict

    data = _read_document(args.file, DEFAULT_MAX_DOCUMENT_BYTES)
    settings = get_settings()
    from worker.broker import RedisUrlError

    try:
        result = submit(data, dry_run=args.dry_run, settings=settings)
    except DocumentError as error:
        _report_document_error(error, sys.stderr)
        return EXIT_INVALID
    except CampaignConflict as error:
        raise CommandError(f"metadata.id: {error}") from None
    except (SecretKeyError, RedisUrlError) as error:
        raise CommandError(str(error)) from None
    except redis.RedisError as error:
        raise CommandError(
            f"Redis at {_describe_redis(settings.redis_url)} (REDIS_URL) failed: "
            f"{type(error).__name__}: {error}; nothing was submitted unless `cce-sync status` "
            "lists the campaign"
        ) from None

    if args.json:
        output: dict[str, Any] = {"campaign_id": result.campaign_id, "targets": result.targets}
        output["created"] = result.created
        if result.dry_run:
            output["dry_run"] = True
            output["rules_pending"] = result.rules_pending
            output["plan"] = _plan_json(result.plan)
        _print_json(output, sys.stdout)
        return EXIT_OK

    if result.dry_run:
        sys.stdout.write(
            f"campaign {result.campaign_id}: dry run, nothing stored or enqueued\n"
            f"{result.targets} node pools named by ID; {result.rules_pending} entries of "
            "spec.targets are resolved by listing when the campaign runs\n\n"
        )
        headers = ("REGION", "PROJECT", "CLUSTER", "NODE POOL", "NODES", "MAX UNAVAILABLE", "LOGIN")
        sys.stdout.write(_format_table(headers, _plan_rows(result.plan)))
        return EXIT_OK

    sys.stdout.write(f"{result.campaign_id}\n")
    if not result.created:
        sys.stderr.write(
            f"campaign {result.campaign_id} already exists with the same content; nothing changed\n"
        )
    return EXIT_OK


# status -----------------------------------------------------------------------------------


def _open_store() -> CampaignStore:
    from worker.broker import RedisUrlError, redis_client

    settings = get_settings()
    try:
        client = redis_client(settings)
    except RedisUrlError as error:
        raise CommandError(str(error)) from None
    return CampaignStore(client, events_max_length=settings.events_max_length)


def _campaign_json(
    store: CampaignStore, campaign: Campaign, *, with_targets: bool
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": campaign.id,
        "name": campaign.name,
        "state": campaign.state,
        "reason": campaign.reason or None,
        "createdAt": _timestamp(campaign.created_at),
        "finishedAt": _timestamp(campaign.finished_at),
        "dryRun": campaign.dry_run,
        "expanded": campaign.expanded,
        "targetTotal": campaign.target_total,
        "counts": dict(campaign.counts),
    }
    if with_targets:
        data["targets"] = [record.public() for record in store.targets(campaign.id)]
    return data


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {count}" for state, count in counts.items() if count) or "none yet"


def _render_campaign(data: dict[str, Any]) -> str:
    reason = f" ({_printable(data['reason'])})" if data["reason"] else ""
    header = (
        f"Campaign  {data['id']}  {_printable(data['name'])}\n"
        f"State     {data['state']}{reason}{'  [dry run]' if data['dryRun'] else ''}\n"
        f"Created   {data['createdAt']}"
        + (f"   finished {data['finishedAt']}" if data["finishedAt"] else "")
        + "\n"
        f"Targets   {data['targetTotal']}"
        + ("" if data["expanded"] else " so far (selectors not yet resolved)")
        + f": {_counts_text(data['counts'])}\n\n"
    )
    headers = [title for title, _ in _TARGET_COLUMNS]
    rows = [[row.get(key) for _, key in _TARGET_COLUMNS] for row in data["targets"]]
    return header + _format_table(headers, rows)


def _render_campaign_list(campaigns: list[dict[str, Any]]) -> str:
    if not campaigns:
        return "no campaigns\n"
    headers = ("ID", "NAME", "STATE", "REASON", "TARGETS", "SYNCED", "FAILED", "PENDING", "CREATED")
    rows = []
    for data in campaigns:
        counts = data["counts"]
        failed = counts.get("failed", 0) + counts.get("sync_failed", 0)
        rows.append(
            [
                data["id"],
                data["name"],
                data["state"],
                data["reason"] or "",
                data["targetTotal"],
                counts.get("synced", 0),
                failed,
                counts.get("pending", 0),
                data["createdAt"],
            ]
        )
    return _format_table(headers, rows)


def _status_snapshot(store: CampaignStore, campaign_id: str | None) -> tuple[Any, bool]:
    """Return the status (JSON-ready) and whether every campaign shown has ended."""
    if campaign_id is None:
        campaigns = [_campaign_json(store, c, with_targets=False) for c in store.list_campaigns()]
        done = all(data["state"] in FINAL_CAMPAIGN_STATES for data in campaigns)
        return campaigns, done

    campaign = store.get(campaign_id)
    if campaign is None:
        raise CommandError(f"campaign {campaign_id!r} not found; `cce-sync status` lists campaigns")
    data = _campaign_json(store, campaign, with_targets=True)
    return data, data["state"] in FINAL_CAMPAIGN_STATES


def _write_status(args: argparse.Namespace, snapshot: Any, stream: TextIO) -> None:
    if args.json:
        output = snapshot if args.id else {"campaigns": snapshot}
        if args.watch:
            stream.write(json.dumps(output, ensure_ascii=False) + "\n")
        else:
            _print_json(output, stream)
        return
    text = _render_campaign(snapshot) if args.id else _render_campaign_list(snapshot)
    if args.watch and stream.isatty():
        stream.write("\x1b[H\x1b[2J")
    stream.write(text)
    stream.flush()


def _command_status(args: argparse.Namespace) -> int:
    store = _open_store()
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while True:
        snapshot, done = _status_snapshot(store, args.id)
        _write_status(args, snapshot, sys.stdout)
        if not args.watch or done:
            return EXIT_OK
        if deadline is not None and time.monotonic() >= deadline:
            sys.stderr.write(f"cce-sync status: stopped watching after {args.timeout} seconds\n")
            return EXIT_OK
        time.sleep(args.interval)


# pause / resume / cancel -------------------------------------------------------------------


def _command_control(args: argparse.Namespace) -> int:
    store = _open_store()
    actions: dict[str, Callable[[str], bool]] = {
        "pause": store.pause,
        "resume": store.resume,
        "cancel": store.cancel,
    }
    try:
        changed = actions[args.command](args.id)
    except (CampaignNotFound, InvalidStateChange) as error:
        raise CommandError(str(error)) from None

    if changed and args.command in ("resume", "cancel"):
        # The messages of a paused campaign were dropped. Expansion enqueues every unfinished
        # target again, so a resumed campaign goes on and a cancelled one skips what is left.
        from worker.actors import expand_campaign

        expand_campaign.send(args.id)

    campaign = store.get(args.id)
    state = campaign.state if campaign is not None else "unknown"
    verb = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}[args.command]
    if changed:
        sys.stdout.write(f"campaign {args.id} {verb}; state is now {state}\n")
    else:
        sys.stdout.write(f"campaign {args.id} unchanged; state is {state}\n")
    return EXIT_OK


# export -----------------------------------------------------------------------------------


def _export_rows(store: CampaignStore, campaign_id: str) -> list[dict[str, Any]]:
    if store.get(campaign_id) is None:
        raise CommandError(f"campaign {campaign_id!r} not found; `cce-sync status` lists campaigns")
    rows = []
    for record in store.targets(campaign_id):
        row = record.public()
        row["updatedAt"] = _timestamp(record.updated_at)
        rows.append(row)
    return rows


def _command_export(args: argparse.Namespace) -> int:
    rows = _export_rows(_open_store(), args.id)
    if args.format == "json":
        _print_json(rows, sys.stdout)
        return EXIT_OK

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {column: "" if row.get(column) is None else row[column] for column in EXPORT_COLUMNS}
        )
    sys.stdout.write(buffer.getvalue())
    return EXIT_OK


# schema -----------------------------------------------------------------------------------


def schema_text() -> str:
    """Return the campaign JSON Schema as `cce-sync schema` prints it."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def _command_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return EXIT_OK


# Parser -----------------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of `cce-sync` (the delegated commands are listed only)."""
    parser = argparse.ArgumentParser(
        prog="cce-sync",
        description="Fleet-wide node pool synchronization campaigns for Huawei Cloud CCE.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="validate a campaign document and enqueue it")
    submit.add_argument(
        "file", metavar="FILE", help="campaign document (YAML or JSON), - for stdin"
    )
    submit.add_argument("--dry-run", action="store_true", help="validate and print the plan only")
    submit.add_argument("--json", action="store_true", help="print the result as JSON")
    submit.set_defaults(handler=_command_submit)

    status = commands.add_parser("status", help="show campaigns, or one campaign with its targets")
    status.add_argument("id", metavar="ID", nargs="?", help="campaign ID")
    status.add_argument(
        "--json", action="store_true", help="print JSON (one line per refresh with --watch)"
    )
    status.add_argument("--watch", action="store_true", help="refresh until finished or cancelled")
    status.add_argument(
        "--interval",
        type=_positive_seconds,
        default=DEFAULT_WATCH_INTERVAL_SECONDS,
        help=f"seconds between refreshes with --watch (default: {DEFAULT_WATCH_INTERVAL_SECONDS})",
    )
    status.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=None,
        help="stop watching after this many seconds",
    )
    status.set_defaults(handler=_command_status)

    for name, summary in (
        ("pause", "pause a campaign: no new sync requests until resumed"),
        ("resume", "resume a paused campaign"),
        ("cancel", "cancel a campaign: targets not yet submitted end skipped"),
    ):
        control = commands.add_parser(name, help=summary)
        control.add_argument("id", metavar="ID", help="campaign ID")
        control.set_defaults(handler=_command_control)

    export = commands.add_parser("export", help="print per-target results")
    export.add_argument("id", metavar="ID", help="campaign ID")
    export.add_argument(
        "--format", choices=("csv", "json"), default="csv", help="output format (default: csv)"
    )
    export.set_defaults(handler=_command_export)

    schema = commands.add_parser("schema", help="print the JSON Schema of the campaign document")
    schema.set_defaults(handler=_command_schema)

    for name, (_, summary) in DELEGATED_COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def _run_delegated(command: str, argv: list[str]) -> int:
    module_name, _ = DELEGATED_COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        sys.stderr.write(f"cce-sync {command}: not available, module {module_name} is missing\n")
        return EXIT_FAILURE
    result = module.main(argv)
    return int(result or 0)


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING
    if verbosity == 1:
        level = logging.INFO
    elif verbosity > 1:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `cce-sync` with `argv` (the process arguments when None); return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)

    # Delegated commands parse their own options, --help included.
    if arguments and arguments[0] in DELEGATED_COMMANDS:
        try:
            return _run_delegated(arguments[0], arguments[1:])
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED

    parser = build_parser()
    args = parser.parse_args(arguments)
    _configure_logging(args.verbose)
    try:
        return int(args.handler(args))
    except CommandError as error:
        sys.stderr.write(f"cce-sync {args.command}: {error}\n")
        return error.exit_code
    except redis.RedisError as error:
        where = _describe_redis(get_settings().redis_url)
        sys.stderr.write(
            f"cce-sync {args.command}: Redis at {where} (REDIS_URL) failed: "
            f"{type(error).__name__}: {error}\n"
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
