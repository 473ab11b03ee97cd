# The teacher (SFT on the training split) and the student's starting point (from scratch + warm-up SFT,
# or a pretrained model); both are shared by every method.


rule teacher_sft:
    input:
        data=[f"{R}/data/{split}.jsonl" for split in CFG["teacher"]["data"]],
        tokenizer=f"{R}/tokenizer",
    output:
        model=directory(f"{R}/teacher/model"),
        metrics=f"{R}/teacher/train.json",
    params:
        spec=spec_json(teacher_spec(CFG)),
    log:
        f"{R}/logs/teacher_sft.log",
    benchmark:
        f"{R}/benchmarks/teacher_sft.tsv"
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    shell:
        "{PY} -m kdbench.cli stage teacher --threads {threads} --spec {params.spec:q} --data {input.data} "
        "--tokenizer {input.tokenizer} --out-dir {output.model} --metrics {output.metrics} > {log} 2>&1"


rule student_init:
    input:
        data=[f"{R}/data/{split}.jsonl" for split in CFG["student"]["warmup_data"]],
        tokenizer=f"{R}/tokenizer",
    output:
        model=directory(f"{R}/student_init/model"),
        metrics=f"{R}/student_init/train.json",
    params:
        spec=spec_json(student_init_spec(CFG)),
    log:
        f"{R}/logs/student_init.log",
    benchmark:
        f"{R}/benchmarks/student_init.tsv"
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    shell:
        "{PY} -m kdbench.cli stage student-init --threads {threads} --spec {params.spec:q} --data {input.data} "
        "--tokenizer {input.tokenizer} --out-dir {output.model} --metrics {output.metrics} > {log} 2>&1"


rule teacher_cache:
    input:
        train=f"{R}/data/train.jsonl",
        teacher=f"{R}/teacher/model",
        tokenizer=f"{R}/tokenizer",
    output:
        tensors=f"{R}/teacher/cache.safetensors",
        meta=f"{R}/teacher/cache.json",
    params:
        spec=spec_json(teacher_cache_spec(CFG)),
    log:
        f"{R}/logs/teacher_cache.log",
    benchmark:
        f"{R}/benchmarks/teacher_cache.tsv"
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    shell:
        "{PY} -m kdbench.cli stage teacher-cache --threads {threads} --spec {params.spec:q} --train {input.train} "
        "--teacher {input.teacher} --tokenizer {input.tokenizer} --out {output.tensors} --metrics {output.meta} "
        "> {log} 2>&1"
