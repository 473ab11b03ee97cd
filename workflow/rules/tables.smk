# Tables and figures: every result JSON -> paper_tables/<name>/ (Markdown, LaTeX, CSV, PNG). Trains nothing.
# Outputs are marked for the HTML report: snakemake --report report.html --configfile config/<name>.yaml
from pathlib import Path

from kdbench.plots import PLOT_NAMES
from kdbench.tables import DEFAULT_LOSS, RUNS_FILE

TABLE_NAMES = ["scores", "runtime", "difficulty", "per_level", "curriculum"]
TABLE_FILES = expand("{d}/{table}.{ext}", d=TABLES_DIR, table=TABLE_NAMES, ext=["md", "tex", "csv"])
TABLE_FILES += expand("{d}/{plot}.png", d=TABLES_DIR, plot=PLOT_NAMES)
TABLE_FILES.append(f"{TABLES_DIR}/{RUNS_FILE}")

# Captions are relative to this file; the tables' CSV files and every figure go into the report.
REPORT_CAPTION = {"scores": "scores.rst", "runtime": "runtime.rst", "difficulty": "difficulty_table.rst",
                  "per_level": "per_level.rst", "curriculum_table": "curriculum_table.rst",
                  "curriculum": "curriculum.rst", "training_curves": "training_curves.rst",
                  "difficulty_plot": "difficulty_plot.rst", "score_vs_runtime": "score_vs_runtime.rst",
                  "runs": "runs.rst"}


report: "../report/workflow.rst"


def _table_output(path):
    name, ext = Path(path).stem, Path(path).suffix.lstrip(".")
    if ext == "csv":
        key = f"{name}_table" if f"{name}_table" in REPORT_CAPTION else name
        return report(path, caption=f"../report/{REPORT_CAPTION[key]}", category="Tables",
                      labels={"table": name, "format": "CSV"})
    if ext == "png":
        key = "difficulty_plot" if name == "difficulty" else name
        return report(path, caption=f"../report/{REPORT_CAPTION[key]}", category="Figures",
                      labels={"figure": name})
    return path


def table_inputs(wildcards):
    inputs = all_scores()
    inputs += [f"{R}/runs/{run}/seed{seed}/train.json" for run in TRAINED_RUNS for seed in SEEDS]
    inputs += [f"{R}/teacher/train.json", f"{R}/student_init/train.json", f"{R}/data/manifest.json"]
    inputs += [f"{R}/evalsets/{es}.json" for es in EVAL_SETS]
    if any(spec.needs_profile for spec in RUNS.values()):
        inputs += [f"{R}/profile/summary.json", f"{R}/profile/difficulty.csv"]
    if CACHE_MODE != "live" and any(spec.needs_teacher for spec in RUNS.values()):
        inputs.append(f"{R}/teacher/cache.json")
    return inputs


rule paper_tables:
    input:
        table_inputs,
    output:
        [_table_output(path) for path in TABLE_FILES],
    params:
        config=lambda w: spec_json({"tables": CFG["tables"], "runs": {r: s.label for r, s in RUNS.items()},
                                    "methods": {r: s.method for r, s in RUNS.items()}, "order": list(RUNS),
                                    "losses": {r: s.hparams.get("loss", DEFAULT_LOSS) for r, s in RUNS.items()},
                                    "eval_sets": EVAL_SETS, "seeds": SEEDS, "eval_seeds": EVAL_SEEDS,
                                    "teacher_seed": TEACHER_SEED, "name": CFG["name"],
                                    "methods_root": CFG["methods"]["root"]}),
    log:
        f"{R}/logs/paper_tables.log",
    benchmark:
        f"{R}/benchmarks/paper_tables.tsv"
    threads: 1
    shell:
        "MPLBACKEND=Agg {PY} -m kdbench.cli tables --results {R} --out {TABLES_DIR} --config-json {params.config:q} > {log} 2>&1"
