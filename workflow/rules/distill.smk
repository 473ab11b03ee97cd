# Distillation: one job per (run, training seed); a run is a method variant from methods/<name>/,
# or the SFT reference student. All of them go through kdbench.train.train.


def distill_inputs(wildcards):
    identity = run_identity(wildcards.run)
    inputs = {"train": f"{R}/data/train.jsonl", "student": f"{R}/student_init/model"}
    if identity["needs_teacher"]:
        inputs["teacher"] = f"{R}/teacher/model"
        if CACHE_MODE != "live":
            inputs["cache"] = f"{R}/teacher/cache.safetensors"
            inputs["cache_meta"] = f"{R}/teacher/cache.json"
    if identity["needs_profile"]:
        inputs["profile"] = f"{R}/profile/difficulty.csv"
    return inputs


def optional_flags(wildcards, input):
    flags = []
    if hasattr(input, "teacher"):
        flags.append(f"--teacher {input.teacher}")
    if hasattr(input, "profile"):
        flags.append(f"--profile {input.profile}")
    if hasattr(input, "cache"):
        flags.append(f"--cache {input.cache} --cache-meta {input.cache_meta}")
    return " ".join(flags)


rule distill:
    input:
        unpack(distill_inputs),
    output:
        model=directory(f"{R}/runs/{{run}}/seed{{seed}}/model"),
        metrics=f"{R}/runs/{{run}}/seed{{seed}}/train.json",
    params:
        spec=lambda w: spec_json(distill_spec(CFG, run_identity(w.run), int(w.seed))),
        flags=optional_flags,
        methods_root=CFG["methods"]["root"],
    log:
        f"{R}/logs/distill/{{run}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/distill/{{run}}/seed{{seed}}.tsv"
    threads: TRAIN_THREADS
    resources:
        gpu=GPU * DEVICES,
    shell:
        "{LAUNCH} -m kdbench.cli stage distill --threads {threads} --spec {params.spec:q} --run {wildcards.run} "
        "--methods-root {params.methods_root} --train {input.train} --student {input.student} {params.flags} "
        "--out-dir {output.model} --metrics {output.metrics} > {log} 2>&1"
