"""Probe a design of the synthetic testbed in one process, without the workflow.

Trains a teacher on the teacher pool, warms a student up on the student pool, profiles the training
split with the warmed-up student, then trains an SFT and a KD (FKL) student from it on the (noisy)
training split, and scores every model on the test and OOD splits per family and level. Prints one
JSON summary; the measurements recorded in docs/testbed.md come from this script.

    python scripts/testbed_probe.py --set noise.rate=0.3 --set student.hidden=96 --out probe.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kdbench.batching import encode_records
from kdbench.data import record_from_json
from kdbench.data.synthetic import generate_suite
from kdbench.difficulty import sequence_ce
from kdbench.generation import generate
from kdbench.methods import ScheduleContext, SupervisedFineTuning, discover_methods
from kdbench.metrics import exact_match, rouge_l
from kdbench.models import build_model, load_tokenizer, train_bpe_tokenizer
from kdbench.train import LiveTeacher, TrainConfig, train

DEFAULTS = {
    "seed": 1234,
    "sizes": {"teacher_pool": 32000, "student_pool": 4000, "train": 2000, "test": 600, "ood": 300},
    "template": "compact",
    "noise": {"rate": 0.3, "kind": "swap"},
    "vocab_size": 800,
    "max_prompt_tokens": 160, "max_length": 192,
    "teacher": {"layers": 4, "hidden": 128, "epochs": 4, "lr": 2e-3, "batch": 32},
    "student": {"layers": 2, "hidden": 64, "warmup_epochs": 2, "epochs": 16, "lr": 3e-3, "batch": 32,
                "train_seed": 1},
    "kd_losses": ["fkl"],
    "eval": {"seeds": [10, 20], "max_new_tokens": 16, "batch_size": 100},
    "threads": 1,
    "skip": [],
}


def set_key(cfg: dict, assignment: str) -> None:
    key, value = assignment.split("=", 1)
    *path, last = key.split(".")
    node = cfg
    for part in path:
        node = node.setdefault(part, {})
    node[last] = json.loads(value) if value[:1] in "[{0123456789-tf\"n" else value


def arch(layers: int, hidden: int, max_len: int) -> dict:
    return {"init": "scratch", "architecture": {
        "model_type": "llama", "num_hidden_layers": layers, "hidden_size": hidden,
        "intermediate_size": 2 * hidden, "num_attention_heads": max(2, hidden // 32),
        "num_key_value_heads": max(2, hidden // 32), "max_position_embeddings": max_len,
        "tie_word_embeddings": True}}


def fit(model, method, records, tokenizer, cfg, epochs, lr, batch, seed, teacher=None, warmup=10):
    encoded = encode_records(tokenizer, records, cfg["max_prompt_tokens"], cfg["max_length"])
    tc = TrainConfig(epochs=epochs, lr=lr, lr_min=1e-5, warmup_steps=warmup, global_batch_size=batch,
                     micro_batch_size=batch, log_every=10 ** 9)
    ctx = ScheduleContext(tuple(r.id for r in records), epochs, seed)
    return train(model, method, encoded, ctx, tc, pad_id=tokenizer.pad_token_id, seed=seed,
                 device=torch.device("cpu"), teacher=teacher, log=lambda m: None)


def score(model, tokenizer, records, cfg, decoding, seed):
    dec = {"decoding": decoding, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "no_repeat_ngram_size": 6,
           "max_new_tokens": cfg["eval"]["max_new_tokens"]}
    preds, _ = generate(model, tokenizer, [r.prompt for r in records], max_prompt_tokens=cfg["max_prompt_tokens"],
                        decoding=dec, seed=seed, batch_size=cfg["eval"]["batch_size"], device=torch.device("cpu"))
    refs = [list(r.references) for r in records]
    return np.array(rouge_l(preds, refs)), np.array(exact_match(preds, refs)), preds


def evaluate(model, tokenizer, splits, cfg) -> dict:
    out = {}
    for name, records in splits.items():
        fam = np.array([r.meta["family"] for r in records])
        lvl = np.array([r.meta["difficulty"] for r in records])
        per_decoding = {}
        for decoding, seeds in (("greedy", [0]), ("sample", cfg["eval"]["seeds"])):
            rl, em = zip(*[score(model, tokenizer, records, cfg, decoding, s)[:2] for s in seeds])
            rl, em = np.mean(rl, axis=0), np.mean(em, axis=0)
            per_decoding[decoding] = {
                "rouge_l": float(rl.mean()), "em": float(em.mean()),
                "em_by_family_level": {f: {int(l): round(float(em[(fam == f) & (lvl == l)].mean()), 1)
                                           for l in sorted(set(lvl))} for f in sorted(set(fam))},
                "em_by_level": {int(l): round(float(em[lvl == l].mean()), 1) for l in sorted(set(lvl))},
                "rouge_by_family": {f: round(float(rl[fam == f].mean()), 1) for f in sorted(set(fam))},
            }
        out[name] = per_decoding
    return out


def spearman(a, b) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic)


def profile(model, tokenizer, records, cfg) -> dict:
    encoded = encode_records(tokenizer, records, cfg["max_prompt_tokens"], cfg["max_length"])
    ce = sequence_ce(model, encoded, pad_id=tokenizer.pad_token_id, batch_size=64, device=torch.device("cpu"))
    rl, _, preds = score(model, tokenizer, records, cfg, "greedy", 0)
    fam = np.array([r.meta["family"] for r in records])
    lvl = np.array([r.meta["difficulty"] for r in records])
    from kdbench.difficulty import reciprocal_rank_fusion
    from scipy.stats import rankdata
    rrf = reciprocal_rank_fusion([rankdata(-rl), rankdata(ce)])   # higher = easier
    out = {}
    for name, hard in (("student_ce", ce), ("student_rouge_l", -rl), ("rrf", -rrf)):
        values, counts = np.unique(np.round(hard, 6), return_counts=True)
        within = [spearman(hard[fam == f], lvl[fam == f]) for f in sorted(set(fam))]
        out[name] = {"spearman": spearman(hard, lvl), "within_family": float(np.nanmean(within)),
                     "within_by_family": {f: round(w, 2) for f, w in zip(sorted(set(fam)), within)},
                     "constant_share": float(counts.max() / len(hard))}
    out["empty_outputs"] = int(sum(1 for p in preds if not p.strip()))
    out["examples"] = preds[:5]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], help="key=value (JSON value), dotted keys")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kdbench-probe"))
    args = parser.parse_args(argv)
    cfg = copy.deepcopy(DEFAULTS)
    for assignment in args.set:
        set_key(cfg, assignment)
    torch.set_num_threads(cfg["threads"])
    t_all = time.perf_counter()
    report = {"config": cfg, "timings": {}}
    suite = generate_suite(cfg["seed"], cfg["sizes"], noise=cfg["noise"], template=cfg["template"],
                           families=cfg.get("families"))
    recs = {split: [record_from_json(r, f"{split}:{i}") for i, r in enumerate(rows)] for split, rows in suite.items()}
    # The tokenizer and the teacher depend only on the teacher pool and the teacher's settings: cached.
    from kdbench.io import sha256_json
    key = sha256_json({k: cfg[k] for k in ("seed", "vocab_size", "teacher", "max_length", "template")}
                      | {"generator": sha256_json(suite["teacher_pool"][:50])}
                      | {"pool": cfg["sizes"]["teacher_pool"], "with_train": cfg["teacher"].get("with_train") and cfg["noise"]})[:16]
    work = args.work / key
    if not (work / "tok").is_dir():
        texts = [t for r in recs["teacher_pool"] for t in (r.prompt, r.output)]
        train_bpe_tokenizer(texts, cfg["vocab_size"], work / "tok")
    tok = load_tokenizer(work / "tok")
    lengths = [len(e.input_ids) for e in encode_records(tok, recs["train"][:500], cfg["max_prompt_tokens"], cfg["max_length"])]
    report["tokens_per_example"] = float(np.mean(lengths))
    report["max_tokens"] = int(np.max(lengths))
    evals = {"test": recs["test"], "ood": recs["ood"]}
    sft = SupervisedFineTuning(SupervisedFineTuning.Config())

    t0 = time.perf_counter()
    tcfg = cfg["teacher"]
    teacher = build_model(arch(tcfg["layers"], tcfg["hidden"], cfg["max_length"]), tok, 1)
    if (work / "teacher.pt").is_file():
        teacher.load_state_dict(torch.load(work / "teacher.pt"))
        report["timings"]["teacher_s"] = json.loads((work / "teacher_s.json").read_text())
    else:
        pool = recs["teacher_pool"] + (recs["train"] if tcfg.get("with_train") else [])
        fit(teacher, sft, pool, tok, cfg, tcfg["epochs"], tcfg["lr"], tcfg["batch"], 1, warmup=30)
        report["timings"]["teacher_s"] = time.perf_counter() - t0
        torch.save(teacher.state_dict(), work / "teacher.pt")
        (work / "teacher_s.json").write_text(json.dumps(report["timings"]["teacher_s"]))
    report["teacher"] = evaluate(teacher, tok, evals, cfg)
    print(json.dumps({"teacher": {k: {d: v[d]["rouge_l"] for d in v} for k, v in report["teacher"].items()},
                      "s": report["timings"]["teacher_s"]}), file=sys.stderr, flush=True)

    scfg = cfg["student"]
    t0 = time.perf_counter()
    student = build_model(arch(scfg["layers"], scfg["hidden"], cfg["max_length"]), tok, 2)
    if scfg["warmup_epochs"]:
        fit(student, sft, recs["student_pool"], tok, cfg, scfg["warmup_epochs"], scfg["lr"], scfg["batch"], 2)
    report["timings"]["student_init_s"] = time.perf_counter() - t0
    init_state = copy.deepcopy(student.state_dict())
    if "init_eval" not in cfg["skip"]:
        report["student_init"] = evaluate(student, tok, evals, cfg)
    t0 = time.perf_counter()
    report["profile"] = profile(student, tok, recs["train"], cfg)
    report["timings"]["profile_s"] = time.perf_counter() - t0
    print(json.dumps({"profile": {k: v for k, v in report["profile"].items() if k != "examples"}}), file=sys.stderr, flush=True)

    methods = discover_methods("methods")
    runs = {"sft": (sft, None)}
    for loss in cfg["kd_losses"]:
        info = methods["vanilla_kd"]
        runs[f"kd_{loss}"] = (info.cls(info.cls.config_class(loss=loss)), LiveTeacher(teacher, torch.device("cpu"), torch.float32))
    for name, (method, live) in runs.items():
        student.load_state_dict(init_state)
        t0 = time.perf_counter()
        fit(student, method, recs["train"], tok, cfg, scfg["epochs"], scfg["lr"], scfg["batch"], scfg["train_seed"], teacher=live)
        report["timings"][f"{name}_s"] = time.perf_counter() - t0
        report[name] = evaluate(student, tok, evals, cfg)
        print(json.dumps({name: {k: {d: v[d]["rouge_l"] for d in v} for k, v in report[name].items()},
                          "s": report["timings"][f"{name}_s"]}), file=sys.stderr, flush=True)
    report["timings"]["total_s"] = time.perf_counter() - t_all
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    print(json.dumps({k: report[k] for k in ("timings", "tokens_per_example")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
