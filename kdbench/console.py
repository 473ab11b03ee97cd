"""What a workflow run prints on the console: a line where the logs are, a line where the tables are, and
on failure the logs of the jobs that did not finish.

``profiles/default`` (Snakemake's workflow profile) sets ``quiet: [rules, host]``: Snakemake then prints
three lines per finished job ("Finished jobid: N (Rule: x)", "k of n steps done") instead of each job's
block, whose "reason:" line alone can run to several KB. Quiet rules also hide Snakemake's "Error in rule"
block, so :func:`report_failure` names the failed jobs' logs itself. Everything a job does is in its log
(``results/<name>/logs/``), with progress bars.
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


class _DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg in SCHEDULER_CHATTER)


def _say(message: str) -> None:
    print(f"kdbench: {message}", file=sys.stderr, flush=True)


def quiet_rules(workflow) -> bool:
    quiet = getattr(getattr(workflow, "output_settings", None), "quiet", None) or ()
    return any(getattr(q, "name", str(q)).lower() in ("rules", "all") for q in quiet)


def on_start(workflow, name: str, logs_dir: str) -> None:
    """Drop the scheduler chatter when the console is quiet about rules, and say where the logs are."""
    global _started
    _started = time.time()
    if quiet_rules(workflow):
        logging.getLogger("snakemake.logging").addFilter(_DropChatter())
    _say(f"{name}: each job writes its log, with progress bars, under {logs_dir}/ (follow one with tail -f)")


def on_success(name: str, tables_dir: str, logs_dir: str) -> None:
    _say(f"{name} done: tables in {tables_dir}/, job logs in {logs_dir}/")


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
