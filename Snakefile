# kdbench: teacher SFT -> difficulty profiling -> distillation per method -> Rouge-L evaluation -> tables.
# Config says what to run (config/*.yaml, validated against kdbench/schemas/config.schema.yaml);
# the rules in workflow/rules/ say how.
from snakemake.utils import min_version

from kdbench import console

min_version("8.20")

# Snakemake's own message for a missing or malformed config file names neither the file nor the line;
# check the default config first (a --configfile is read by Snakemake before this file: `kdbench
# validate-config FILE` names the file and line).
from snakemake.exceptions import WorkflowError

from kdbench.errors import KDBenchError
from kdbench.schema import load_yaml

try:
    load_yaml("config/config.yaml")
except KDBenchError as exc:
    raise WorkflowError(f"kdbench: {exc}") from None


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"


# Every result file is a target, not only the tables: Snakemake does not rebuild a deleted intermediate
# file whose consumers are up to date, and a deleted run must be re-run.
rule all:
    input:
        TABLE_FILES,
        table_inputs(None),


# `snakemake --report` documents a finished run: refuse, naming the profile and what is missing, instead of
# a report of whatever tables happen to be on disk (Snakemake would warn once per file and exit 0).
if any(arg == "--report" or arg.startswith("--report=") for arg in sys.argv[1:]):
    _missing = [path for path in [*TABLE_FILES, *table_inputs(None)] if not Path(path).exists()]
    if _missing:
        raise WorkflowError(console.report_without_results(CFG["name"], CONFIG_SOURCES, R, _missing))


# The console (kdbench/console.py): where the logs are, where the tables are, the logs of failed jobs.
onstart:
    console.on_start(workflow, CFG["name"], f"{R}/logs")


onsuccess:
    console.on_success(CFG["name"], TABLES_DIR, f"{R}/logs")


onerror:
    console.report_failure(f"{R}/logs")
