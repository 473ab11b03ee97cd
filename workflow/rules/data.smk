# Data: training splits from the configured source, eval sets from evals/<name>/, the tokenizer.


rule prepare_data:
    output:
        splits=expand("{R}/data/{split}.jsonl", R=R, split=DATA_SPLITS),
        manifest=f"{R}/data/manifest.json",
    params:
        spec=spec_json(data_spec(CFG)),
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data.tsv"
    threads: 1
    shell:
        "{PY} -m kdbench.cli stage prepare-data --spec {params.spec:q} --out-dir {R}/data > {log} 2>&1"


def eval_set_input(wildcards):
    spec = EVAL_SPECS[wildcards.eval_set]
    return [f"{R}/data/{spec.split}.jsonl"] if spec.source_kind == "workflow" else []


rule eval_set:
    input:
        eval_set_input,
    output:
        records=f"{R}/evalsets/{{eval_set}}.jsonl",
        info=f"{R}/evalsets/{{eval_set}}.json",
    params:
        spec=lambda w: spec_json({**eval_spec(CFG, w.eval_set), "data_dir": CFG["data_dir"]}),
        split=lambda w, input: f"--workflow-split {input[0]}" if input else "",
    log:
        f"{R}/logs/eval_set/{{eval_set}}.log",
    benchmark:
        f"{R}/benchmarks/eval_set/{{eval_set}}.tsv"
    threads: 1
    shell:
        "{PY} -m kdbench.cli stage eval-set --spec {params.spec:q} --data-dir {CFG[data_dir]:q} {params.split} "
        "--out {output.records} --info {output.info} > {log} 2>&1"


rule tokenizer:
    input:
        train=f"{R}/data/train.jsonl",
    output:
        directory(f"{R}/tokenizer"),
    params:
        spec=spec_json(tokenizer_spec(CFG)),
    log:
        f"{R}/logs/tokenizer.log",
    benchmark:
        f"{R}/benchmarks/tokenizer.tsv"
    threads: 1
    shell:
        "{PY} -m kdbench.cli stage tokenizer --spec {params.spec:q} --train {input.train} --out-dir {output} > {log} 2>&1"
