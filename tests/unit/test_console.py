"""The workflow console (kdbench/console.py): one line per finished job, through Snakemake's own filter
and formatter for a run that is quiet about rules and host (profiles/default)."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("snakemake_interface_logger_plugins")
from snakemake.logging import DefaultFilter, DefaultFormatter  # noqa: E402
from snakemake.settings.enums import Quietness  # noqa: E402
from snakemake_interface_logger_plugins.common import LogEvent  # noqa: E402

from kdbench.console import OneLinePerJob, job_label  # noqa: E402


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.extend(self.format(record).splitlines())


def _console(condense: bool):
    logger = logging.getLogger(f"kdbench-test-console-{condense}")
    logger.handlers.clear()
    logger.filters.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    quiet = {Quietness.RULES, Quietness.HOST}
    handler = _Lines()
    handler.addFilter(DefaultFilter(quiet, debug_dag=False, verbose=False, dryrun=False, printshellcmds=True))
    handler.setFormatter(DefaultFormatter(quiet, show_failed_logs=True))
    logger.addHandler(handler)
    if condense:
        logger.addFilter(OneLinePerJob())
    return logger, handler


def _run_jobs(logger, jobs):
    """What Snakemake's scheduler logs for jobs run one after another."""
    total = len(jobs)
    for done, (job_id, rule, wildcards) in enumerate(jobs, start=1):
        logger.info("Select jobs to execute...")
        logger.info("Execute 1 jobs...", extra=dict(event=LogEvent.JOB_STARTED, jobs=[job_id]))
        logger.info(None, extra=dict(event=LogEvent.JOB_INFO, jobid=job_id, rule_name=rule, wildcards=wildcards,
                                     rule_msg=None, local=False, is_checkpoint=False, input=[], output=[],
                                     log=[], benchmark=None, reason="Missing output files", priority=0,
                                     threads=1, resources={}, indent=False, is_handover=False))
        logger.info(f"Finished jobid: {job_id} (Rule: {rule})", extra=dict(event=LogEvent.JOB_FINISHED,
                                                                           job_id=job_id))
        logger.info(None, extra=dict(event=LogEvent.PROGRESS, done=done, total=total))


JOBS = [(4, "prepare_data", {}), (12, "distill", {"run": "pocl-fkl", "seed": "1"}),
        (30, "evaluate", {"run": "pocl-fkl", "seed": "1", "eval_set": "synthetic_test"})]


def test_one_line_per_finished_job_names_the_job_and_the_count():
    logger, handler = _console(condense=True)
    _run_jobs(logger, JOBS)
    assert len(handler.lines) == len(JOBS), handler.lines
    assert handler.lines[1].endswith("2 of 3 steps (66%) done: distill run=pocl-fkl seed=1")
    assert handler.lines[2].endswith("3 of 3 steps (100%) done: evaluate run=pocl-fkl seed=1 eval_set=synthetic_test")
    assert all(line[:2].isdigit() and line[2] == ":" for line in handler.lines), "each line starts with the time"


def test_without_the_filter_snakemake_prints_four_lines_per_job():
    """The baseline the filter is measured against: quiet rules alone still prints 4 lines (+ chatter)."""
    logger, handler = _console(condense=False)
    _run_jobs(logger, JOBS)
    assert sum("Execute 1 jobs..." in line for line in handler.lines) == len(JOBS)
    assert sum(line.startswith("Finished jobid") for line in handler.lines) == len(JOBS)
    assert len(handler.lines) >= 4 * len(JOBS)


def test_other_messages_pass_unchanged():
    logger, handler = _console(condense=True)
    logger.info("Building DAG of jobs...")
    logger.error("Exiting because a job execution failed. Look below for error messages")
    assert handler.lines == ["Building DAG of jobs...",
                             "Exiting because a job execution failed. Look below for error messages"]


def test_job_label():
    assert job_label("all", None) == "all"
    assert job_label("distill", {"run": "taid", "seed": "2"}) == "distill run=taid seed=2"
