"""Per-job overhead of a finished workflow run: each job's wall time minus the time of its own work.

    python -m kdbench.benchmarks.overhead results/<name> [--json overhead.json]

The job wall time is the ``s`` column of Snakemake's benchmark file (``results/<name>/benchmarks/<job>.tsv``,
the whole shell command: interpreter start-up, imports, the work, exit). The job's own work is the
``job_s`` line that ``kdbench stage`` and ``kdbench tables`` write at the end of the job's log
(``results/<name>/logs/<job>.log``, the same relative path), timed inside the process from the start of
the stage function to its end. Overhead = wall − work: process start-up, imports, argument parsing,
and (through the warm worker) connecting and forking.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from kdbench.cli import JOB_TIME_RE


def read_wall_s(tsv: Path) -> float:
    """The ``s`` column of a Snakemake benchmark file (mean over its rows when it was repeated)."""
    lines = [line.split("\t") for line in tsv.read_text().splitlines() if line.strip()]
    column = lines[0].index("s")
    return statistics.fmean(float(row[column]) for row in lines[1:])


def read_job_s(log: Path) -> float | None:
    if not log.is_file():
        return None
    found = JOB_TIME_RE.findall(log.read_text(errors="replace"))
    return float(found[-1]) if found else None


def collect(results: Path) -> list[dict]:
    jobs = []
    bench_root = results / "benchmarks"
    for tsv in sorted(bench_root.rglob("*.tsv")):
        rel = tsv.relative_to(bench_root).with_suffix("")
        wall = read_wall_s(tsv)
        work = read_job_s(results / "logs" / rel.with_suffix(".log"))
        jobs.append({"job": str(rel), "rule": rel.parts[0], "wall_s": wall, "job_s": work,
                     "overhead_s": None if work is None else wall - work})
    return jobs


def summarise(jobs: list[dict]) -> dict:
    timed = [j for j in jobs if j["overhead_s"] is not None]

    def stats(group: list[dict]) -> dict:
        wall = sum(j["wall_s"] for j in group)
        over = sum(j["overhead_s"] for j in group)
        return {"jobs": len(group), "wall_s": wall, "job_s": sum(j["job_s"] for j in group), "overhead_s": over,
                "median_wall_s": statistics.median(j["wall_s"] for j in group),
                "median_job_s": statistics.median(j["job_s"] for j in group),
                "median_overhead_s": statistics.median(j["overhead_s"] for j in group),
                "max_overhead_s": max(j["overhead_s"] for j in group),
                "overhead_share": over / wall if wall > 0 else 0.0}

    rules = sorted({j["rule"] for j in timed}, key=lambda r: min(i for i, j in enumerate(timed) if j["rule"] == r))
    return {"all": stats(timed) if timed else None,
            "rules": {r: stats([j for j in timed if j["rule"] == r]) for r in rules},
            "untimed": [j["job"] for j in jobs if j["overhead_s"] is None]}


def render(summary: dict) -> str:
    head = "| rule | jobs | median wall s | median work s | median overhead s | max overhead s | overhead share |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    rows = list(summary["rules"].items()) + ([("**all**", summary["all"])] if summary["all"] else [])
    for name, s in rows:
        lines.append(f"| {name} | {s['jobs']} | {s['median_wall_s']:.2f} | {s['median_job_s']:.2f} | "
                     f"{s['median_overhead_s']:.2f} | {s['max_overhead_s']:.2f} | {100 * s['overhead_share']:.0f} % |")
    if summary["all"]:
        a = summary["all"]
        lines.append(f"\nsum of job wall times {a['wall_s']:.1f} s, of which work {a['job_s']:.1f} s and overhead "
                     f"{a['overhead_s']:.1f} s ({100 * a['overhead_share']:.0f} %); median overhead per job "
                     f"{a['median_overhead_s']:.2f} s")
    if summary["untimed"]:
        lines.append(f"no job_s line in the log of: {', '.join(summary['untimed'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a run's results folder, e.g. results/smoke")
    parser.add_argument("--json", type=Path, help="also write every job's numbers and the summary here")
    args = parser.parse_args(argv)
    jobs = collect(args.results)
    if not jobs:
        print(f"{args.results}: no benchmark files under {args.results / 'benchmarks'}", file=sys.stderr)
        return 1
    summary = summarise(jobs)
    print(render(summary))
    if args.json:
        args.json.write_text(json.dumps({"jobs": jobs, **summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
