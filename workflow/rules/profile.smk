# Difficulty profiling: computed once, shared by every method that needs it.


rule profile_difficulty:
    input:
        train=f"{R}/data/train.jsonl",
        student=f"{R}/student_init/model",
        teacher=f"{R}/teacher/model",
    output:
        table=f"{R}/profile/difficulty.csv",
        summary=f"{R}/profile/summary.json",
    params:
        spec=spec_json(profile_spec(CFG)),
    log:
        f"{R}/logs/profile_difficulty.log",
    benchmark:
        f"{R}/benchmarks/profile_difficulty.tsv"
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    shell:
        "{PY} -m kdbench.cli stage profile --threads {threads} --spec {params.spec:q} --train {input.train} "
        "--student {input.student} --teacher {input.teacher} --out {output.table} --summary {output.summary} "
        "> {log} 2>&1"
