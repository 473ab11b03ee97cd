"""Learning curve of one model on the synthetic suite: greedy exact match per family and level on the
test split every ``--eval-every`` steps. Used to size the testbed (docs/testbed.md).

    python scripts/learning_curve.py --layers 4 --hidden 128 --pool 12000 --steps 3000 --out curve.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kdbench.batching import IGNORE_INDEX, collate, encode_records
from kdbench.data import record_from_json
from kdbench.data.synthetic import generate_suite
from kdbench.generation import generate
from kdbench.metrics import exact_match, rouge_l
from kdbench.models import ResponseLM, build_model, load_tokenizer, train_bpe_tokenizer


def arch(layers: int, hidden: int, max_len: int, heads: int | None = None) -> dict:
    heads = heads or max(2, hidden // 32)
    return {"init": "scratch", "architecture": {
        "model_type": "llama", "num_hidden_layers": layers, "hidden_size": hidden,
        "intermediate_size": 2 * hidden, "num_attention_heads": heads, "num_key_value_heads": heads,
        "max_position_embeddings": max_len, "tie_word_embeddings": True}}


def greedy_scores(model, tok, records, max_prompt, max_new=16):
    dec = {"decoding": "greedy", "max_new_tokens": max_new, "no_repeat_ngram_size": 6}
    preds, _ = generate(model, tok, [r.prompt for r in records], max_prompt_tokens=max_prompt, decoding=dec,
                        seed=0, batch_size=100, device=torch.device("cpu"))
    refs = [list(r.references) for r in records]
    em, rl = np.array(exact_match(preds, refs)), np.array(rouge_l(preds, refs))
    fam = np.array([r.meta["family"] for r in records])
    lvl = np.array([r.meta["difficulty"] for r in records])
    model.train()
    return {"em": round(float(em.mean()), 1), "rouge_l": round(float(rl.mean()), 1),
            "em_by_family_level": {f: [round(float(em[(fam == f) & (lvl == l)].mean()), 0) for l in sorted(set(lvl))]
                                   for f in sorted(set(fam))}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int)
    p.add_argument("--pool", type=int, default=12000)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--template", default="minillm")
    p.add_argument("--families", nargs="*")
    p.add_argument("--vocab", type=int, default=800)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    suite = generate_suite(args.seed, {"teacher_pool": args.pool, "test": 600}, families=args.families,
                           template=args.template)
    recs = {s: [record_from_json(r, s) for r in rows] for s, rows in suite.items()}
    work = Path(f"/tmp/kdbench-curve/{time.time_ns()}")
    train_bpe_tokenizer([t for r in recs["teacher_pool"] for t in (r.prompt, r.output)], args.vocab, work / "tok")
    tok = load_tokenizer(work / "tok")
    encoded = encode_records(tok, recs["teacher_pool"], 160, 192)
    model = build_model(arch(args.layers, args.hidden, 192, args.heads), tok, 1)
    n_params = sum(p.numel() for p in model.parameters())
    head = ResponseLM(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warm = min(100, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.005 + 0.995 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, args.steps - warm))))
    rng = random.Random(1)
    order: list[int] = []
    curve, train_s, tokens = [], 0.0, 0
    model.train()
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            perm = list(range(len(encoded)))
            rng.shuffle(perm)
            order += perm
        t0 = time.perf_counter()
        batch_ids, order = order[:args.batch], order[args.batch:]
        batch = collate([encoded[i] for i in batch_ids], tok.pad_token_id)
        tokens += int(batch["attention_mask"].sum())
        logits = head(batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"][batch["labels"] != IGNORE_INDEX])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        train_s += time.perf_counter() - t0
        if step % args.eval_every == 0 or step == args.steps:
            point = {"step": step, "loss": round(float(loss), 4), "train_s": round(train_s, 1),
                     "tokens_per_s": round(tokens / train_s), **greedy_scores(model, tok, recs["test"], 160)}
            curve.append(point)
            print(json.dumps(point), flush=True)
    result = {"args": vars(args) | {"out": str(args.out)}, "parameters": n_params,
              "tokens_per_example": float(np.mean([len(e.input_ids) for e in encoded])), "curve": curve}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
