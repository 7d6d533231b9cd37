"""MoE students against the dense one, measured on a small student (``python -m distill_ray.train.moe_run``).

The same cut SmolLM2 student trained the same optimizer steps on the same rows (sft), three ways:

- ``dense``: the cut student as it is;
- ``moe top-1``: upcycled to ``experts`` experts per layer, each token routed to one: as many parameters run per
  token as in the dense student (plus the router), ``experts`` times the MLP parameters in all;
- ``moe top-2``: the same, two experts per token: twice the dense MLP's active parameters.

The rows are the built-in puzzles' train problems with their reference solutions (verified by construction:
``pangu.pair_rows``); the score is the NLL per token of the held-out eval puzzles' reference solutions. One seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill_ray.train.config import TrainSettings

ARMS = {"dense": None, "moe top-1": 1, "moe top-2": 2}   # arm -> top_k (None: no MoE)


def parameter_counts(model_dir: str) -> dict:
    """All parameters and those one token runs through (``moe.active_parameters``)."""
    import torch
    from transformers import AutoModelForCausalLM

    from distill_ray.train.moe import active_parameters

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return {"parameters": sum(p.numel() for p in model.parameters()), "active_parameters": active_parameters(model)}


def expert_shares(model_dir: str, rows: list[dict]) -> list[float]:
    """Each expert's share of the routing choices over ``rows``' real tokens, all layers together (uniform:
    1 / experts each); the load-balancing loss is what keeps a top-1 router from sending everything to one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    counts = torch.zeros(model.config.num_local_experts)
    with torch.no_grad():
        for row in rows:
            ids = tokenizer(row["prompt_text"] + row["target_text"], return_tensors="pt").input_ids
            for logits in model(input_ids=ids, output_router_logits=True).router_logits:
                chosen = logits.topk(model.config.num_experts_per_tok, dim=-1).indices
                counts += torch.bincount(chosen.flatten(), minlength=len(counts)).float()
    return [round(float(c), 3) for c in counts / counts.sum()]


def run(out: Path, layers: int, steps: int, experts: int, num_train: int, num_eval: int, seed: int, lr: float,
        batch_size: int, aux_loss_weight: float, arms: tuple[str, ...] = tuple(ARMS)) -> dict:
    import ray

    from distill_ray.models import resolve_model
    from distill_ray.tasks.puzzles import load_puzzles
    from distill_ray.train import build_student, train_student
    from distill_ray.train.pangu import held_out_nll, pair_rows

    out.mkdir(parents=True, exist_ok=True)
    student = build_student(resolve_model("smollm2"), out / "student_cut", num_layers=layers)
    train, evals = load_puzzles(num_train=num_train, num_eval=num_eval, seed=seed)
    pairs, held_pairs = pair_rows(train, str(student)), pair_rows(evals, str(student))
    common = dict(workers=1, zero_stage=0, batch_size=batch_size, lr=lr, seed=seed, log_every=10, max_length=256,
                  tensorboard=False, torch_threads=2, cpus_per_worker=1, objectives={"sft": 1.0}, max_steps=steps,
                  epochs=100)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    results = {"setup": {"layers": layers, "steps": steps, "experts": experts, "train_pairs": len(pairs),
                         "eval_pairs": len(held_pairs), "lr": lr, "batch_size": batch_size, "seed": seed,
                         "aux_loss_weight": aux_loss_weight},
               "untrained": {"nll_solutions": held_out_nll(str(student), held_pairs, "sft", 256)}}
    for arm in arms:
        top_k = ARMS[arm]
        moe = {"experts": experts, "top_k": top_k, "aux_loss_weight": aux_loss_weight} if top_k else {}
        result = train_student(student, ray.data.from_items(pairs), out / arm.replace(" ", "_"),
                               TrainSettings(**common, moe=moe))
        results[arm] = {"steps": result.steps, "seconds": round(result.seconds, 1),
                        "median_step_seconds": round(sorted(result.step_seconds)[len(result.step_seconds) // 2], 2),
                        "final_train_loss": result.final_loss,
                        "nll_solutions": held_out_nll(result.output_dir, held_pairs, "sft", 256),
                        **parameter_counts(result.output_dir)}
        if top_k:
            results[arm]["expert_shares"] = expert_shares(result.output_dir, held_pairs)
        print(arm, results[arm], flush=True)
    (out / "moe.json").write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    from distill_ray.train.pangu import run_arguments

    parser = run_arguments(__doc__.split("\n\n")[0], "outputs/moe", layers=6, steps=30)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--aux-loss-weight", type=float, default=0.01)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    args = parser.parse_args()
    results = run(Path(args.out), args.layers, args.steps, args.experts, args.num_train, args.num_eval, args.seed,
                  args.lr, args.batch_size, args.aux_loss_weight, args.arms)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
