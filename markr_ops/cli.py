"""`markr-ops`: watch the queues, drain dead letters, replay submissions from the vault, manage
vendors' API keys and print development tokens.

Exit codes: 0 done, 1 failed (with a one-line reason), 2 usage error.
"""
from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from markr_ops import access, environment, render
from shared.bus.queues import PIPELINE_QUEUES

DEFAULT_CHECKPOINT = Path(".local/ops/reprocess-checkpoint.jsonl")
console = Console()
errors = Console(stderr=True)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failures an operator can act on: reported in one line, without a traceback."""
    import psycopg
    from azure.core.exceptions import AzureError

    from shared.bus.azure import AzureServiceBusError
    from shared.bus.local import LockLostError, UnknownQueueError
    from shared.bus.port import BusAdminError
    from shared.ops.replay import ReplayError
    from shared.vault.model import VaultError

    return (environment.SettingsError, BusAdminError, AzureServiceBusError, ReplayError, VaultError,
            UnknownQueueError, LockLostError, psycopg.Error, AzureError, TimeoutError, OSError)


class OpsGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _expected_errors() as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


def _ops():
    return _services().bus_admin


def _emit(as_json: bool, data: Any, table: Any = None) -> None:
    if as_json:
        click.echo(render.as_json(data))
    elif table is not None:
        console.print(table)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
queue_argument = click.argument("queue", type=click.Choice(PIPELINE_QUEUES))


@click.group(cls=OpsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--settings", "settings_file", type=click.Path(dir_okay=False, path_type=Path),
              help="App settings file (default: local.settings.json of the project, if present).")
def main(settings_file: Path | None) -> None:
    """Operate Markr: queues, dead letters, replays, vendors, tokens."""
    environment.load(settings_file)


main.add_command(access.token)
main.add_command(access.vendors)


@main.command()
@json_option
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between refreshes with --watch.")
def queues(as_json: bool, watch: bool, interval: float) -> None:
    """Message counts of every queue and its dead-letter sub-queue."""
    from shared.ops.report import all_counts, queues_report

    ops = _ops()
    if not watch:
        counts = all_counts(ops)
        _emit(as_json, {"generatedAt": datetime.now(UTC).isoformat(), "queues": [c.as_json() for c in counts]},
              render.queues_table(counts))
        return
    try:
        if as_json:
            while True:
                click.echo(render.as_json(queues_report(ops)))
                time.sleep(interval)
        with Live(render.queues_table(all_counts(ops)), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render.queues_table(all_counts(ops)), refresh=True)
    except KeyboardInterrupt:
        pass


@main.group("dead-letters")
def dead_letters() -> None:
    """Inspect, resubmit and purge dead-lettered messages."""


@dead_letters.command("list")
@queue_argument
@json_option
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def list_dead_letters(queue: str, as_json: bool, limit: int) -> None:
    """Dead letters of QUEUE, oldest first (peeked: nothing changes)."""
    dead = _ops().dead_letters(queue, limit)
    _emit(as_json, {"queue": queue, "deadLetters": [d.as_json() for d in dead]},
          render.dead_letters_table(queue, dead))


@dead_letters.command("show")
@queue_argument
@click.argument("message_id")
def show_dead_letter(queue: str, message_id: str) -> None:
    """One dead letter with its properties and body, as JSON."""
    dead = _ops().dead_letter(queue, message_id)
    if dead is None:
        raise click.ClickException(f"no dead letter {message_id!r} in {queue}")
    click.echo(render.as_json(dead.as_json(with_body=True)))


def _selection(message_ids: tuple[str, ...], all_: bool) -> list[str] | None:
    if bool(message_ids) == all_:
        raise click.UsageError("name MESSAGE_ID(s) or pass --all (not both)")
    return None if all_ else list(message_ids)


@dead_letters.command("resubmit")
@queue_argument
@click.argument("message_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every dead letter of QUEUE (as of now).")
@json_option
def resubmit(queue: str, message_ids: tuple[str, ...], all_: bool, as_json: bool) -> None:
    """Send dead letters back to QUEUE as new messages, then remove them from the dead letters."""
    result = _ops().resubmit(queue, _selection(message_ids, all_))
    if as_json:
        click.echo(render.as_json({"queue": queue, "resubmitted": result.resubmitted,
                                   "notFound": result.not_found}))
    else:
        for old, new in result.resubmitted.items():
            console.print(f"resubmitted {old} as {new}")
        console.print(f"{len(result.resubmitted)} message(s) resubmitted to {queue}")
    if result.not_found:
        errors.print(f"not dead-lettered in {queue}: {', '.join(result.not_found)}")
        sys.exit(1)


@dead_letters.command("purge")
@queue_argument
@click.argument("message_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every dead letter of QUEUE (as of now).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def purge(queue: str, message_ids: tuple[str, ...], all_: bool, yes: bool, as_json: bool) -> None:
    """Delete dead letters for good."""
    selection = _selection(message_ids, all_)
    what = "ALL dead letters" if selection is None else f"{len(selection)} dead letter(s)"
    if not yes and not click.confirm(f"Delete {what} of {queue}? This cannot be undone", err=True):
        raise click.ClickException("nothing purged")
    removed = _ops().purge(queue, selection)
    _emit(as_json, {"queue": queue, "purged": removed})
    if not as_json:
        console.print(f"{removed} dead letter(s) purged from {queue}")


def _services():
    from shared.bootstrap import services

    s = services()
    if s.settings.bus == "local":
        environment.check_database()
    return s


@main.command()
@click.argument("submission_ids", nargs=-1, required=True)
@json_option
def replay(submission_ids: tuple[str, ...], as_json: bool) -> None:
    """Process SUBMISSION_IDs again from the vault, each as a new run."""
    from shared.ops.replay import replay as replay_submissions

    app = _services()
    refs = replay_submissions(list(submission_ids), vault=app.vault, bus=app.bus, store=app.store)
    _emit(as_json, {"runs": [r.as_json() for r in refs]})
    if not as_json:
        for ref in refs:
            console.print(f"{ref.submission_id}: run {ref.run_id} started")


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or date-time", param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@main.command()
@click.option("--all", "all_", is_flag=True, required=True, help="Every vaulted submission (required).")
@click.option("--since", help="Only submissions received at or after this ISO date/date-time (UTC if no zone).")
@click.option("--source", help="Only this source.")
@click.option("--wait", is_flag=True, help="Wait until every run is rejected, completed or failed.")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds --wait waits.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_CHECKPOINT,
              show_default=True, help="Progress file; an interrupted reprocess resumes from it.")
@click.option("--restart", is_flag=True, help="Ignore the checkpoint and start over.")
@click.option("--rebuild", is_flag=True,
              help="First empty every table derived from the vault (results, statistics), so marks can go "
                   "down as well as up: after a policy change. Implies --restart; not with --since/--source.")
@click.option("--yes", is_flag=True, help="Do not ask before --rebuild empties the results.")
@json_option
def reprocess(all_: bool, since: str | None, source: str | None, wait: bool, timeout: float,
              checkpoint: Path, restart: bool, rebuild: bool, yes: bool, as_json: bool) -> None:
    """Process the vault again (new runs), resumably."""
    from shared.db.results import clear_derived
    from shared.ops.replay import reprocess as reprocess_vault
    from shared.ops.replay import wait_for_runs

    when = _parse_since(since)
    if rebuild and (since or source):
        raise click.UsageError("--rebuild replays the whole vault: it cannot be combined with --since or --source")
    app = _services()
    if wait or rebuild:
        environment.check_database()
    if rebuild:
        if not yes:
            click.confirm("Empty all results and statistics, then rebuild them from the vault?", abort=True,
                          err=True)
        with app.pool.connection() as conn:
            clear_derived(conn)
        restart = True
    started = time.monotonic()
    with _progress(as_json) as bar:
        task = bar.add_task("starting runs", total=None)
        report = reprocess_vault(vault=app.vault, bus=app.bus, store=app.store, checkpoint=checkpoint,
                                 since=when, source=source, restart=restart,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
        sent_seconds = time.monotonic() - started
        statuses: dict[str, int] | None = None
        if wait and report.runs:
            waiting = bar.add_task("waiting for runs", total=len(report.runs))
            statuses = wait_for_runs(app.pool, report.runs, timeout=timeout,
                                     progress=lambda done, total: bar.update(waiting, completed=done))
    elapsed = time.monotonic() - started
    summary = {"checkpoint": str(checkpoint), "selected": report.total, "started": report.started,
               "alreadyStarted": report.already, "alreadyFinished": report.was_finished,
               "sendSeconds": round(sent_seconds, 3), "seconds": round(elapsed, 3), "statuses": statuses}
    if as_json:
        click.echo(render.as_json(summary))
        return
    if report.was_finished:
        console.print(f"checkpoint {checkpoint} is already finished ({report.total} run(s)); "
                      "pass --restart to reprocess again")
        return
    console.print(f"started {report.started} run(s) ({report.already} already started earlier) "
                  f"of {report.total} submission(s) in {sent_seconds:.1f} s")
    if statuses is not None:
        rate = len(report.runs) / elapsed if elapsed else 0.0
        console.print(f"all finished in {elapsed:.1f} s ({rate:.1f} submissions/s): "
                      + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))


@main.command()
@click.argument("submission_id")
@click.option("--reason", required=True, help="Why (kept with the status, and on the tombstone with --erase).")
@click.option("--erase", is_flag=True, help="Also delete the document from the vault (a tombstone keeps its sha256).")
@json_option
def retract(submission_id: str, reason: str, erase: bool, as_json: bool) -> None:
    """Remove SUBMISSION_ID's results for good (recomputed from the remaining submissions)."""
    from shared.ops.retract import retract as retract_submission
    from shared.pipeline.outcomes import Problem

    app = _services()
    environment.check_database()
    outcome = retract_submission(submission_id, reason, erase=erase, pool=app.pool, vault=app.vault, store=app.store)
    if isinstance(outcome, Problem):
        raise click.ClickException(f"{outcome.code}: {outcome.message}")
    report = outcome.report
    if as_json:
        click.echo(render.as_json(report))
        return
    if report["alreadyRetracted"]:
        console.print(f"{submission_id} was already retracted at {report['retractedAt']} ({report['reason']})")
    else:
        console.print(f"{submission_id} retracted: {report['studentsRecomputed']} student result(s) recomputed, "
                      f"{report['studentsRemoved']} removed, statistics refreshed for "
                      f"{len(report['testIds'])} test(s): {', '.join(report['testIds']) or '-'}")
    if report["erased"]:
        console.print(f"vault entry erased; tombstone sha256 {report['erased'].get('sha256')}")


DEFAULT_ENCRYPT_CHECKPOINT = Path(".local/ops/vault-encrypt-checkpoint.jsonl")


@main.group("vault")
def vault_group() -> None:
    """The vault's encryption: seal plain entries, rewrap data keys after a key rotation."""


@vault_group.command("encrypt")
@click.option("--all", "all_", is_flag=True, required=True, help="Every plain entry (required).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_ENCRYPT_CHECKPOINT,
              show_default=True, help="Progress file; an interrupted run resumes from it.")
@click.option("--restart", is_flag=True, help="Ignore the checkpoint and look at every entry again.")
@json_option
def vault_encrypt(all_: bool, checkpoint: Path, restart: bool, as_json: bool) -> None:
    """Seal every plain (FormatVersion 1) vault entry under the current key."""
    from shared.ops.vault_keys import encrypt_all

    app = _vault_services()
    with _progress(as_json) as bar:
        task = bar.add_task("sealing entries", total=None)
        report = encrypt_all(app.vault, checkpoint=checkpoint, restart=restart,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
    summary = {"checkpoint": str(checkpoint), "entries": report.total, "sealed": report.changed,
               "alreadySealed": report.skipped, "doneEarlier": report.already, "keyId": report.key_id}
    if as_json:
        click.echo(render.as_json(summary))
        return
    console.print(f"{report.changed} entr(y/ies) sealed, {report.skipped} already sealed, {report.already} done by an "
                  f"earlier run, of {report.total}; key {report.key_id}")


@vault_group.command("rewrap")
@json_option
def vault_rewrap(as_json: bool) -> None:
    """Wrap every entry's data key under the current key version (after a rotation)."""
    from shared.ops.vault_keys import rewrap_all

    app = _vault_services()
    with _progress(as_json) as bar:
        task = bar.add_task("rewrapping data keys", total=None)
        report = rewrap_all(app.vault, progress=lambda done, total: bar.update(task, completed=done, total=total))
    summary = {"entries": report.total, "rewrapped": report.changed, "unchanged": report.skipped,
               "keyId": report.key_id}
    if as_json:
        click.echo(render.as_json(summary))
        return
    console.print(f"{report.changed} data key(s) rewrapped to {report.key_id}; {report.skipped} unchanged "
                  f"(already current, or plain) of {report.total}")


@vault_group.command("rotate-local-key")
def vault_rotate_local_key() -> None:
    """Add a new version to the LOCAL key file and make it current (in Azure, Key Vault rotates the key)."""
    from shared.vault.kek import LocalKeyFile

    kek = _vault_services().kek
    if not isinstance(kek, LocalKeyFile):
        raise click.ClickException("the vault uses a Key Vault key: rotate it in Key Vault (docs/operations.md)")
    console.print(f"new current key {kek.rotate()} in {kek.path}; run `markr-ops vault rewrap` next")


def _vault_services():
    from shared.bootstrap import services

    return services()


def _progress(quiet: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=errors, disable=quiet, transient=False)


if __name__ == "__main__":
    main()
