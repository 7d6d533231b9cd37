"""Student training: building students, target-only labels, and real Ray Train + DeepSpeed runs."""

from __future__ import annotations

import json

import pytest
import torch

from distill_ray.train import TrainSettings, build_student, build_student_from_config, first_and_last_layers
from distill_ray.train.data import IGNORE_INDEX, collate, encode_example, tokenize_rows
from distill_ray.train.objectives import sft_loss
from tests.tensorboard_events import scalars

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
WORDS = ["red", "green", "blue", "cat"]


def pattern_rows(repeat: int = 8) -> list[dict]:
    """A simple repeated pattern a tiny model learns in a few steps: say the word three times."""
    return [{"prompt_text": CHAT.format(f"Say {w}"), "target_text": f"{w} {w} {w}"} for w in WORDS * repeat]


@pytest.fixture(scope="module")
def teacher_dir():
    from distill_ray.models import resolve_model

    return resolve_model("smollm2")


@pytest.fixture(scope="module")
def tiny_dir(teacher_dir, tmp_path_factory):
    """A 3.3M-parameter random llama with the real SmolLM2 tokenizer."""
    return build_student_from_config(teacher_dir, tmp_path_factory.mktemp("tiny"), hidden_size=64, num_layers=2)


def test_a_cut_keeps_the_first_and_the_last_layers():
    assert first_and_last_layers(30, 4) == [0, 1, 28, 29]
    assert first_and_last_layers(30, 5) == [0, 1, 2, 28, 29]
    assert first_and_last_layers(30, 1) == [0]
    assert first_and_last_layers(5, 5) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        first_and_last_layers(4, 5)


def test_run_steps_end_with_the_epochs_or_max_steps_whichever_comes_first():
    """The step the LR schedule decays to 0 at (and the compressor's ramp ends by): 10 rows in micro-batches of
    4 are 3 micro-batches, 2 optimizer steps with accumulation 2 (the last window is short), per epoch."""
    from distill_ray.train.loop import lr_lambda
    from distill_ray.train.trainer import run_steps

    class Split:
        def count(self):
            return 10

    def steps(**overrides):
        return run_steps([Split()], TrainSettings(batch_size=4, grad_accum=2, epochs=3, **overrides))

    assert steps() == 6 and steps(max_steps=4) == 4 and steps(max_steps=9) == 6
    linear = lr_lambda(TrainSettings(lr_schedule="linear"), steps(max_steps=9))
    assert linear(0) == 1.0 and linear(5) == pytest.approx(1 / 6)   # reaches 0 after the run's real last step


def test_deepspeed_imports_without_mlflow_and_leaves_it_importable():
    import subprocess
    import sys

    code = ("import sys; from distill_ray.train.loop import import_deepspeed; ds = import_deepspeed(); "
            "assert 'mlflow' not in sys.modules and ds.initialize; import mlflow; print(mlflow.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split()[-1] == "mlflow", done.stderr[-2000:]


def test_long_rows_lose_the_start_of_the_prompt_not_the_target():
    example = encode_example(list(range(10, 20)), [1, 2, 3], eos_id=0, max_length=8)
    assert example.input_ids == [16, 17, 18, 19, 1, 2, 3, 0]
    assert example.num_prompt == 4
    only_target = encode_example([10, 11], list(range(1, 10)), eos_id=0, max_length=5)
    assert only_target.input_ids == [1, 2, 3, 4, 5] and only_target.num_prompt == 0


def test_labels_cover_only_the_target_and_eos(tokenizer):
    prompts = [CHAT.format("Say red"), CHAT.format("a much longer question than the first one")]
    targets = ["red red red", "ok"]
    examples = tokenize_rows(tokenizer, prompts, targets, max_length=64)
    batch = collate(examples, pad_id=tokenizer.pad_token_id)

    for row, (prompt, target) in enumerate(zip(prompts, targets)):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = batch["labels"][row]
        assert labels[labels != IGNORE_INDEX].tolist() == target_ids
        # Left padding: the row ends with prompt + target; everything before it is padding.
        mask = batch["attention_mask"][row]
        assert batch["input_ids"][row][mask.bool()].tolist() == prompt_ids + target_ids
        assert mask.tolist() == sorted(mask.tolist())
        assert batch["position_ids"][row][mask.bool()].tolist() == list(range(int(mask.sum())))
    assert tokenizer.decode(examples[0].input_ids[examples[0].num_prompt:]) == "red red red<|im_end|>"


def test_sft_loss_equals_per_row_loss_without_padding(tiny_dir, tokenizer):
    """Left padding, position ids and logits_to_keep must not change the loss of any row."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    examples = tokenize_rows(tokenizer, [CHAT.format("Say red"), "x"], ["red red red", "a b c d e f"], 64)
    out = sft_loss(model, collate(examples, tokenizer.pad_token_id))

    total, count = 0.0, 0
    for example in examples:
        ids = torch.tensor([example.input_ids])
        labels = ids.clone()
        labels[:, : example.num_prompt] = IGNORE_INDEX
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())  # the first token has no prediction
        total += model(input_ids=ids, labels=labels).loss.item() * n
        count += n
    assert out.tokens == count
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)


@pytest.mark.slow
def test_build_student_copies_chosen_teacher_layers(teacher_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    student_dir = build_student(teacher_dir, tmp_path / "student", layer_indices=[0, 7, 29])
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    student = AutoModelForCausalLM.from_pretrained(student_dir)

    assert student.config.num_hidden_layers == 3
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    for new, old in enumerate([0, 7, 29]):
        for (name, p_student), (_, p_teacher) in zip(student.model.layers[new].named_parameters(),
                                                     teacher.model.layers[old].named_parameters()):
            assert torch.equal(p_student, p_teacher), name
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    assert json.loads((student_dir / "distill_student.json").read_text())["layer_indices"] == [0, 7, 29]
    assert (student_dir / "tokenizer.json").exists()


@pytest.mark.slow
def test_the_driver_split_equals_ray_datas_sort_and_split(ray_cluster, monkeypatch):
    """Small runs sort and cut their rows in the driver: the same workers' rows, in the same order, as Ray Data's
    sort and equal split; a different seed gives another order."""
    import ray.data

    from distill_ray.train import trainer

    rows = [{"task_id": f"t{i % 7}", "prompt_text": f"p{i}", "target_text": f"t{i}"} for i in range(50)]

    def splits(seed: int, driver_rows: int) -> list[list[str]]:
        monkeypatch.setattr(trainer, "DRIVER_SPLIT_ROWS", driver_rows)
        parts = trainer.split_for_workers(ray.data.from_items(rows), TrainSettings(workers=3, seed=seed))
        return [[r["prompt_text"] for r in part.take_all()] for part in parts]

    in_driver = splits(seed=0, driver_rows=1000)
    assert in_driver == splits(seed=0, driver_rows=0)
    assert [len(part) for part in in_driver] == [16, 16, 16] and len({p for part in in_driver for p in part}) == 48
    assert splits(seed=1, driver_rows=1000) != in_driver


def _mean_nll(model_dir, rows: list[dict]) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = collate(tokenize_rows(tokenizer, [r["prompt_text"] for r in rows], [r["target_text"] for r in rows], 64),
                    tokenizer.pad_token_id)
    with torch.no_grad():
        return sft_loss(model, batch).loss.item()


def _weights(model_dir) -> dict:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()


def _generate(model_dir, prompt: str) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:])


@pytest.mark.slow
def test_train_student_zero2_two_workers(ray_cluster, tiny_dir, tmp_path):
    import ray.data

    from distill_ray.train import train_student

    mlflow_uri = f"file:{tmp_path / 'mlruns'}"
    settings = TrainSettings(workers=2, zero_stage=2, epochs=3, batch_size=4, lr=3e-3, log_every=0,
                             mlflow_uri=mlflow_uri)
    result = train_student(tiny_dir, ray.data.from_items(pattern_rows()), tmp_path / "student", settings)

    # 32 rows split over 2 workers, 4 per micro-batch: 4 optimizer steps per epoch.
    assert result.steps == 12 and len(result.loss_history) == 12
    assert result.samples == 12 * 4 * 2
    assert result.tokens == result.samples * 4  # "red red red" + EOS is 4 tokens for every word
    assert result.loss_history[-1] < result.loss_history[0] - 1.0
    assert result.tokens_per_s > 0 and result.resumed_from == []

    generated = _generate(result.output_dir, CHAT.format("Say red"))
    assert generated.strip(), "the exported student must generate"
    # The exported student is not its initialisation, and fits its training rows better than it did.
    before, after = (_mean_nll(d, pattern_rows(1)) for d in (tiny_dir, result.output_dir))
    assert after < before - 1.0, (before, after)
    saved = json.loads((tmp_path / "student" / "train_result.json").read_text())
    assert saved["result"]["loss_history"] == result.loss_history
    # TensorBoard: the loss of every step, beside the student (not in its model folder).
    events = scalars(tmp_path / "tensorboard" / "student")
    assert [step for step, _ in events["train/loss"]] == list(range(1, 13))
    assert [v for _, v in events["train/loss"]] == pytest.approx(result.loss_history, rel=1e-5)
    assert events["train/tokens"][-1][1] == result.tokens and not (tmp_path / "student" / "tensorboard").exists()
    # MLflow: the same loss per step and run numbers, in a finished run named after the student.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("distill-ray").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "student" and run.data.params["zero_stage"] == "2"
    losses = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    assert [m.step for m in losses] == list(range(1, 13))
    assert [m.value for m in losses] == pytest.approx(result.loss_history, rel=1e-5)
    assert run.data.metrics["train/tokens"] == result.tokens
    # The default checkpoint storage under the output is gone once the student is exported.
    assert not (tmp_path / "student" / "_ray_train").exists() and saved["result"]["checkpoint_path"] is None


@pytest.mark.slow
def test_zero3_run_resumes_after_a_worker_failure(ray_cluster, tiny_dir, tmp_path):
    """Rank 0 dies after step 3; Ray Train restarts the workers from the step-2 checkpoint and the step
    count continues. ZeRO-3 also exercises the gathered export."""
    import ray.data

    from distill_ray.train import train_student

    settings = TrainSettings(workers=2, zero_stage=3, epochs=2, batch_size=4, lr=3e-3, log_every=0,
                             checkpoint_every=2, max_failures=1, fail_at_step=3)
    result = train_student(tiny_dir, ray.data.from_items(pattern_rows()), tmp_path / "student", settings)

    assert result.resumed_from == [2]
    assert result.steps == 8 and len(result.loss_history) == 8
    assert result.samples == 8 * 4 * 2
    assert result.loss_history[-1] < result.loss_history[0]
    assert _generate(result.output_dir, CHAT.format("Say blue")).strip()
    # The same run without the failure: the same batches in the same order, so the same losses.
    settings.fail_at_step, settings.max_failures = None, 0
    settings.storage_path = str(tmp_path / "storage")
    plain = train_student(tiny_dir, ray.data.from_items(pattern_rows()), tmp_path / "plain", settings)
    assert result.loss_history == pytest.approx(plain.loss_history, rel=1e-4)
    # Checkpoints under the output go once the student is exported; in a storage_path the user gave, they stay.
    assert result.checkpoint_path is None and not (tmp_path / "student" / "_ray_train").exists()
    assert plain.checkpoint_path and list((tmp_path / "storage").rglob("train_state.json"))


def _kill_a_train_worker_after(checkpoint: str, root, stop) -> list[int]:
    """Once a checkpoint named ``checkpoint`` exists under ``root``, SIGKILL one Ray Train worker among this test
    session's processes (the local cluster's raylet is our child: never another job's worker)."""
    import os
    import signal
    import time

    import psutil

    killed = []
    while not stop.is_set() and not killed:
        if any(root.rglob(checkpoint)):
            workers = [p for p in psutil.Process().children(recursive=True) if _title(p).startswith("ray::RayTrainWorker")]
            if workers:
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.append(workers[0].pid)
        time.sleep(0.2)
    return killed


def _title(process) -> str:
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


@pytest.mark.slow
def test_the_pipeline_trains_through_a_killed_worker_from_its_checkpoints(ray_cluster, tiny_dir, tmp_path):
    """``distill-ray train`` with ``train.max_failures`` and ``train.checkpoint_every`` from the config: a Ray
    Train worker SIGKILLed mid-run restarts from the last checkpoint, and the run's loss history equals an
    uninterrupted run's, step for step."""
    import threading

    import pandas as pd

    from distill_ray.config import load_config
    from distill_ray.workflow import train

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    rows = [{"task_id": f"t{i}", "kind": "p3", "question": f"def sat(x: int):\n    return x == {i}",
             "program": f"def sol():\n    return {i}", "keep": True} for i in range(24)]
    pd.DataFrame(rows).to_parquet(dataset / "part-0.parquet")
    overrides = [f"train.student={tiny_dir}", "train.workers=2", "train.epochs=2", "train.batch_size=3",
                 "train.lr=3e-3", "train.zero_stage=2", "train.checkpoint_every=1", "train.max_failures=1"]
    cfg = load_config(None, [f"output_dir={tmp_path / 'killed'}", *overrides])
    stop = threading.Event()
    killed: list[int] = []
    killer = threading.Thread(target=lambda: killed.extend(_kill_a_train_worker_after(
        "checkpoint_step000003", tmp_path / "killed", stop)))
    killer.start()
    try:
        result = train(cfg, str(dataset))
    finally:
        stop.set()
        killer.join()
    saved = json.loads((tmp_path / "killed" / "student" / "train_result.json").read_text())["result"]
    assert killed and saved["resumed_from"] and saved["resumed_from"][0] >= 1   # from a checkpoint, not step 0
    assert result["steps"] == 2 * 24 // (2 * 3)                               # epochs x rows / global batch
    plain = train(load_config(None, [f"output_dir={tmp_path / 'plain'}", *overrides]), str(dataset))
    assert result["loss_history"] == pytest.approx(plain["loss_history"], rel=1e-4)


def varied_rows() -> list[dict]:
    """Rows whose targets differ in length (1 to 12 words), so micro-batches hold different token counts."""
    return [{"prompt_text": CHAT.format(f"Say {w}"), "target_text": " ".join([w] * (1 + 3 * i % 12))}
            for i, w in enumerate(WORDS * 2)]


ONE_WORKER = dict(workers=1, epochs=1, lr=1e-3, log_every=0, shuffle_buffer=0)


def _varied_run(tiny_dir, out, **settings):
    import ray.data

    from distill_ray.train import train_student

    return train_student(tiny_dir, ray.data.from_items(varied_rows()), out, TrainSettings(**ONE_WORKER, **settings))


@pytest.fixture(scope="module")
def one_batch_run(ray_cluster, tiny_dir, tmp_path_factory):
    """ZeRO-2 on one worker, each step one micro-batch of 4 of the varied rows: what accumulation and ZeRO-0
    are compared with (one run for both tests)."""
    return _varied_run(tiny_dir, tmp_path_factory.mktemp("one_batch") / "student", zero_stage=2, batch_size=4,
                       grad_accum=1)


@pytest.mark.slow
def test_accumulation_weighs_every_target_token_the_same(one_batch_run, tiny_dir, tmp_path):
    """Two micro-batches of 2 accumulated = one micro-batch of 4 (the same rows): the same loss per step and
    the same weights. A mean of per-micro-batch means, or dropping a window's tail, would differ."""
    whole = one_batch_run
    accumulated = _varied_run(tiny_dir, tmp_path / "accumulated", zero_stage=2, batch_size=2, grad_accum=2)
    assert whole.steps == accumulated.steps == 2
    assert accumulated.loss_history == pytest.approx(whole.loss_history, rel=1e-5)
    a, b = _weights(whole.output_dir), _weights(accumulated.output_dir)
    # Adam moves a weight by up to lr = 1e-3 per step; float noise in the summed gradients leaves ~2e-5.
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 2e-4
    # 8 rows in micro-batches of 3 (3, 3, 2) with accumulation 2: the third is its own, shorter step, not dropped.
    tail = _varied_run(tiny_dir, tmp_path / "tail", zero_stage=2, batch_size=3, grad_accum=2)
    assert tail.steps == 2 and tail.samples == 8


@pytest.mark.slow
def test_zero0_on_one_worker_trains_as_zero2(one_batch_run, tiny_dir, tmp_path):
    """One worker under ZeRO-0 skips DeepSpeed's all-reduce of the gradients (over one rank, the identity):
    accumulated over two micro-batches it takes the same steps to the same weights as ZeRO-2 on one batch."""
    zero2 = one_batch_run
    zero0 = _varied_run(tiny_dir, tmp_path / "zero0", zero_stage=0, batch_size=2, grad_accum=2)
    assert zero0.steps == zero2.steps == 2
    assert zero0.loss_history == pytest.approx(zero2.loss_history, rel=1e-5)
    a, b = _weights(zero2.output_dir), _weights(zero0.output_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 2e-4


@pytest.mark.slow
def test_healing_makes_a_cut_student_a_language_model_again(ray_cluster, teacher_dir, tmp_path):
    """A 4-layer cut of SmolLM2 (first 2 + last 2) writes word salad; a few kd steps from the full model on
    general text bring its held-out NLL on other general text well down."""
    from distill_ray.train.heal import general_text_rows, heal_student

    cut = build_student(teacher_dir, tmp_path / "cut", num_layers=4)
    settings = TrainSettings(workers=2, zero_stage=2, epochs=1, batch_size=2, lr=5e-4, log_every=0, max_length=128)
    healed = heal_student(cut, teacher_dir, tmp_path / "healed", steps=6, settings=settings)
    held_out = general_text_rows(8, chars=300, seed=12345)
    before, after = _mean_nll(cut, held_out), _mean_nll(healed, held_out)
    assert after < before - 1.0, (before, after)
