# Evaluation: one job per (model, eval set) covering every eval seed (the model loads once); each seed
# gets its own predictions.jsonl (per example) and scores.json: generation with the lineage protocol,
# then Rouge-L and exact match.


def eval_outputs(kind):
    return expand(f"{R}/eval/{{{{run}}}}/seed{{{{seed}}}}/{{{{eval_set}}}}/es{{eval_seed}}/{kind}",
                  eval_seed=EVAL_SEEDS)


rule evaluate:
    input:
        model=lambda w: model_dir(w.run, w.seed),
        records=f"{R}/evalsets/{{eval_set}}.jsonl",
    output:
        predictions=eval_outputs("predictions.jsonl"),
        scores=eval_outputs("scores.json"),
    params:
        spec=lambda w: spec_json(eval_spec(CFG, w.eval_set)),
        seeds=",".join(str(s) for s in EVAL_SEEDS),
        out_dir=lambda w: f"{R}/eval/{w.run}/seed{w.seed}/{w.eval_set}",
        device=CFG["device"],
    log:
        f"{R}/logs/evaluate/{{run}}/seed{{seed}}/{{eval_set}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{run}}/seed{{seed}}/{{eval_set}}.tsv"
    threads: EVAL_THREADS
    resources:
        gpu=GPU,
    shell:
        "{PY} -m kdbench.cli stage evaluate --threads {threads} --spec {params.spec:q} --model {input.model} "
        "--eval-set {input.records} --eval-seeds {params.seeds} --label {wildcards.run}/seed{wildcards.seed} "
        "--device {params.device} --out-dir {params.out_dir} > {log} 2>&1"
