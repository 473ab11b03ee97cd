"""What a workflow run prints on the console: a line where the logs are, one line per finished job, a
line where the tables are, and on failure the logs of the jobs that did not finish.

``profiles/default`` (Snakemake's workflow profile) sets ``quiet: [rules, host]``, which drops each job's
block (its "reason:" line alone can run to several KB). Snakemake then still prints four lines per job
("Execute 1 jobs...", a timestamp, "Finished jobid: N (Rule: x)", "k of n steps done"): 382 lines for the
84 jobs of the default run. :class:`OneLinePerJob` folds them into one line per finished job that says
when, how far and which job ("05:12:03  9 of 84 steps (11%) done: distill run=pocl-fkl seed=1"). It reads
the records through the events of Snakemake's logger-plugin interface (``LogEvent``); a logger plugin
proper would need its own installed distribution (Snakemake does not discover plugins installed with
``pip install -e``). Quiet rules also hide Snakemake's "Error in rule" block, so :func:`report_failure`
names the failed jobs' logs itself. Everything a job does is in its log (``results/<name>/logs/``), with
progress bars.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from kdbench.cli import JOB_TIME_RE

# The scheduler prints this once per scheduling round (about once per job) and it says nothing.
SCHEDULER_CHATTER = frozenset({"Select jobs to execute..."})
_started = time.time()


def _event(record: logging.LogRecord) -> str | None:
    event = getattr(record, "event", None)
    return getattr(event, "value", event)


def job_label(rule: str, wildcards: dict | None) -> str:
    """'distill run=pocl-fkl seed=1': the rule and its wildcards, as a user would name the job."""
    return " ".join([rule, *(f"{key}={value}" for key, value in (wildcards or {}).items())])


class OneLinePerJob(logging.Filter):
    """A filter on Snakemake's logger: drops the scheduler chatter, "Execute n jobs..." and the "Finished
    jobid" pair, and rewrites each "k of n steps done" into one line with the time and the finished job."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: dict[int, str] = {}      # job id -> label, from the job's (quiet) job_info record
        self.finished: list[str] = []         # labels of jobs finished since the last progress record

    def filter(self, record: logging.LogRecord) -> bool:
        event = _event(record)
        if event is None:
            return not (isinstance(record.msg, str) and record.msg in SCHEDULER_CHATTER)
        if event == "job_info":
            self.labels[record.jobid] = job_label(record.rule_name, getattr(record, "wildcards", None))
            return True                           # the handler's quiet-rules filter drops it
        if event == "job_started":
            return False
        if event == "job_finished":
            job_id = getattr(record, "job_id", None)
            self.finished.append(self.labels.pop(job_id, str(record.msg).removeprefix("Finished ")))
            return False
        if event == "progress":
            done, total = record.done, record.total
            jobs = ", ".join(self.finished)
            self.finished.clear()
            record.msg = (f"{time.strftime('%H:%M:%S')}  {done} of {total} steps ({100 * done // max(total, 1)}%) "
                          f"done{': ' + jobs if jobs else ''}")
            record.args = ()
            record.event = None                   # printed as the plain message it now is
        return True


def _say(message: str) -> None:
    print(f"kdbench: {message}", file=sys.stderr, flush=True)


def _quiet_about(workflow) -> set[str]:
    quiet = getattr(getattr(workflow, "output_settings", None), "quiet", None) or ()
    return {getattr(q, "name", str(q)).lower() for q in quiet}


def quiet_rules(workflow) -> bool:
    return bool(_quiet_about(workflow) & {"rules", "all"})


def on_start(workflow, name: str, logs_dir: str) -> None:
    """Fold the console to one line per job when it is quiet about rules, and say where the logs are."""
    global _started
    _started = time.time()
    if quiet_rules(workflow) and "progress" not in _quiet_about(workflow):
        logging.getLogger("snakemake.logging").addFilter(OneLinePerJob())
    _say(f"{name}: each job writes its log, with progress bars, under {logs_dir}/ (follow one with tail -f)")


def on_success(name: str, tables_dir: str, logs_dir: str) -> None:
    _say(f"{name} done: tables in {tables_dir}/, job logs in {logs_dir}/")


def report_without_results(name: str, sources: str, results: str, missing: list[str]) -> str:
    others = sorted(p.name for p in Path(results).parent.glob("*") if p.is_dir() and p.name != name) \
        if Path(results).parent.is_dir() else []
    hint = (f"; results of other profiles here: {', '.join(others)} (give its --configfile config/<name>.yaml)"
            if others else "")
    return (f"kdbench: no report for profile '{name}' ({sources}): {len(missing)} of its results and tables are "
            f"missing, e.g. {missing[0]}. Run it first (snakemake --cores all with the same --configfile), "
            f"then the report{hint}")


def unfinished_logs(logs_dir: str | Path, since: float) -> list[Path]:
    """Logs written since ``since`` that do not end with the job's ``job_s`` line: failed or interrupted jobs."""
    found = []
    for path in sorted(Path(logs_dir).rglob("*.log")):
        try:
            if path.stat().st_mtime >= since and not JOB_TIME_RE.search(path.read_text(errors="replace")[-4096:]):
                found.append(path)
        except OSError:
            continue
    return found


def report_failure(logs_dir: str, tail: int = 8) -> None:
    logs = unfinished_logs(logs_dir, _started)
    if not logs:
        _say(f"the run failed; job logs are under {logs_dir}/")
        return
    _say(f"the run failed; {len(logs)} job(s) did not finish (failed, or stopped by the failure):")
    for path in logs:
        lines = path.read_text(errors="replace").replace("\r", "\n").splitlines()
        print(f"--- {path} (last {tail} lines)", file=sys.stderr)
        print("\n".join(lines[-tail:]), file=sys.stderr, flush=True)
