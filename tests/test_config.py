from pathlib import Path

import pytest

from distill_ray.cli import config_from_args, parser
from distill_ray.config import ConfigError, load_config, reference
from tests.conftest import REPO


def test_demo_config_validates():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.task.source == "puzzles"
    assert cfg.teacher.model == "smollm2"
    assert max(cfg.eval.k) <= cfg.eval.samples


def test_overrides_are_typed_and_nested():
    cfg = load_config(REPO / "configs" / "demo.yaml", ["teacher.samples=3", "eval.k=[1, 2]", "train.enabled=false"])
    assert cfg.teacher.samples == 3 and cfg.eval.k == [1, 2] and cfg.train.enabled is False


def test_errors_name_the_bad_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("teacher:\n  samples: 0\n  tempreature: 0.5\ntask:\n  source: nope\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "teacher.samples" in message and "teacher.tempreature" in message and "task.source" in message


def test_k_larger_than_samples_is_rejected():
    with pytest.raises(ConfigError, match="eval.samples"):
        load_config(None, ["eval.samples=2", "eval.k=[1, 4]"])


def test_malformed_override_is_rejected():
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["teacher.samples"])


def test_cli_flags_override_the_file():
    args = parser().parse_args(["run", "--config", str(REPO / "configs" / "demo.yaml"), "--num-train", "5",
                                "--output-dir", "/tmp/x", "--set", "verify.timeout_s=1.5"])
    cfg = config_from_args(args)
    assert cfg.task.num_train == 5 and cfg.output_dir == "/tmp/x" and cfg.verify.timeout_s == 1.5


def test_every_field_is_documented():
    rows = reference()
    assert len(rows) > 40
    assert all(description for _, _, description in rows), [f for f, _, d in rows if not d]


def test_cli_verify_reads_jsonl_and_writes_verdicts_in_order(tmp_path, capsys):
    import json

    from distill_ray.cli import main

    records = [{"id": "a", "kind": "gsm8k", "program": "def solution():\n    return 6 * 7", "expected": 42},
               {"id": "b", "kind": "p3", "program": "def sol():\n    return 3", "sat": "def sat(x: int):\n    return x == 4"},
               "not json"]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["verify", str(source), "--output", str(out), "--set", "verify.timeout_s=3"]) == 0
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(v.get("id"), v["status"]) for v in verdicts] == [("a", "pass"), ("b", "fail"), (None, "error")]
    assert "malformed" in verdicts[2]["detail"]


def test_teachers_start_from_the_teacher_section_and_flags_reach_all_of_them():
    args = parser().parse_args(["run", "--config", str(REPO / "configs" / "demo.yaml"), "--samples", "5",
                                "--set", "teachers=[{name: a}, {name: b, model: gemma3, samples: 2, weight: 2}]"])
    cfg = config_from_args(args)
    a, b = cfg.teacher_list()
    assert (a.name, a.model, a.samples, a.torch_threads) == ("a", "smollm2", 5, 2)  # inherited from `teacher`
    assert (b.name, b.model, b.samples, b.weight, b.prompt_style) == ("b", "gemma3", 2, 2.0, "chat")
    assert load_config(REPO / "configs" / "demo.yaml").teacher_list() == [cfg.teacher.model_copy(update={"samples": 8})]


def test_teacher_names_must_be_unique_and_entries_are_validated():
    with pytest.raises(ConfigError, match="names must be unique"):
        load_config(None, ["teachers=[{model: smollm2}, {model: gemma3}]"])  # both inherit the name 'smollm2'
    with pytest.raises(ConfigError, match="teachers.1.prompt_style"):
        load_config(None, ["teachers=[{name: a}, {name: b, prompt_style: markdown}]"])


def test_two_teacher_config_validates():
    cfg = load_config(REPO / "configs" / "two_teachers.yaml")
    assert [(t.name, t.model, t.prompt_style, t.samples) for t in cfg.teacher_list()] == [
        ("smollm2", "smollm2", "chat", 4), ("gemma3", "gemma3", "plain", 4)]


def test_the_trainer_settings_are_the_train_section_plus_the_run_s_own():
    from distill_ray.config import TrainConfig
    from distill_ray.train import TrainSettings
    from distill_ray.workflow import train_settings

    # One source of defaults: the trainer's settings extend the config section instead of mirroring it.
    assert all(TrainSettings.model_fields[name].default == field.default
               for name, field in TrainConfig.model_fields.items())
    cfg = load_config(REPO / "configs" / "demo.yaml", ["train.epochs=5", "train.max_length=200", "seed=7"])
    settings = train_settings(cfg, teacher_dir=Path("/t"), lr=0.5)
    assert (settings.epochs, settings.max_length, settings.seed, settings.teacher_dir, settings.lr) == (5, 200, 7, "/t", 0.5)
    assert settings.model_dump(include=set(TrainConfig.model_fields)) == {**cfg.train.model_dump(), "lr": 0.5}
