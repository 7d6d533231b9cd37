"""DisCo (`distill-ray disco`): the embedding losses, Spearman, the puzzle-similarity data, the config section and
one end-to-end run on a tiny random model."""

from __future__ import annotations

import math

import pytest
import torch

from distill_ray.config import ConfigError, load_config
from distill_ray.embed import data as similarity_data
from distill_ray.embed import losses
from distill_ray.embed.train import Embedder, distill, pair_cosines


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_distillation_losses_are_zero_for_equal_embeddings_and_match_hand_values():
    x = _randn(4, 8)
    assert losses.distill_mse(x, x).item() == 0.0
    assert losses.distill_cosine(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.distill_cosine(3.0 * x, x).item() == pytest.approx(0.0, abs=1e-6)   # direction only
    assert losses.distill_cosine(-x, x).item() == pytest.approx(2.0, abs=1e-6)
    student, teacher = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    assert losses.distill_mse(student, teacher).item() == pytest.approx((1 + 4) / 2)
    assert losses.distill_cosine(student, teacher).item() == pytest.approx(1.0)
    student.requires_grad_(True)
    losses.distill_mse(student, teacher.requires_grad_(True)).backward()
    assert teacher.grad is None                                              # the teacher is a target only


def test_info_nce_matches_a_hand_computed_two_by_two_case():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [1.0, 1.0]])                     # cos: [[1, 1/sqrt2], [0, 1/sqrt2]]
    t = 0.5
    row0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(1 / math.sqrt(2) / t)))
    row1 = -math.log(math.exp(1 / math.sqrt(2) / t) / (math.exp(0.0) + math.exp(1 / math.sqrt(2) / t)))
    assert losses.info_nce(anchors, positives, t).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert losses.info_nce(anchors, positives * 5, t).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_contrastive_kd_is_info_nce_when_the_teacher_is_sure_of_the_diagonal():
    anchors, positives = _randn(5, 8, seed=1), _randn(5, 8, seed=2)
    teacher = torch.eye(5, 16)                                               # each anchor is its positive only
    kd = losses.contrastive_kd(anchors, positives, teacher, teacher, 0.1, teacher_temperature=1e-3)
    assert kd.item() == pytest.approx(losses.info_nce(anchors, positives, 0.1).item(), rel=1e-5)


def test_contrastive_kd_is_zero_with_no_gradient_when_the_student_has_the_teachers_similarities():
    anchors = _randn(6, 8, seed=3).requires_grad_(True)
    positives = (anchors.detach() + 0.3 * _randn(6, 8, seed=4)).requires_grad_(True)
    rotation, _ = torch.linalg.qr(_randn(8, 8, seed=5))
    teacher_a, teacher_p = anchors.detach() @ rotation * 2, positives.detach() @ rotation * 2   # same cosines
    loss = losses.contrastive_kd(anchors, positives, teacher_a, teacher_p, 0.2, 0.2)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert anchors.grad.abs().max().item() < 1e-5 and positives.grad.abs().max().item() < 1e-5
    other = losses.contrastive_kd(anchors, positives, teacher_p, teacher_a.flip(0), 0.2, 0.2)
    assert other.item() > 1e-2                                               # other similarities: a real loss
    # the soft targets are the teacher's: a plain InfoNCE would not be 0 here
    assert losses.info_nce(anchors, positives, 0.2).item() > 1e-2


def test_the_phase_two_loss_mixes_info_nce_and_contrastive_kd_by_weight():
    a, p, ta, tp = (_randn(4, 6, seed=s) for s in range(4))
    nce = losses.info_nce(a, p, 0.1).item()
    kd = losses.contrastive_kd(a, p, ta, tp, 0.1, 0.2).item()
    assert losses.contrastive(a, p, None, None, 0.1, 0.2, 0.0).item() == pytest.approx(nce)   # no teacher needed
    assert losses.contrastive(a, p, ta, tp, 0.1, 0.2, 1.0).item() == pytest.approx(kd, rel=1e-6)
    assert losses.contrastive(a, p, ta, tp, 0.1, 0.2, 0.25).item() == pytest.approx(0.75 * nce + 0.25 * kd, rel=1e-6)


def test_spearman_matches_hand_cases_with_ties():
    assert losses.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert losses.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert losses.spearman([0.1, 5.0, 0.3, 9.0], [1, 3, 2, 4]) == pytest.approx(1.0)      # ranks, not values
    assert losses.ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    # ties share their mean rank (scipy.stats.spearmanr's convention): ranks [1.5, 1.5, 3.5, 3.5] against
    # [1, 2, 3, 4], centred: (-1, -1, 1, 1) . (-1.5, -0.5, 0.5, 1.5) / (2 * sqrt(5))
    assert losses.spearman([1, 2, 3, 4], [0, 0, 2, 2]) == pytest.approx(4 / (2 * math.sqrt(5)))
    assert math.isnan(losses.spearman([1, 1, 1], [1, 2, 3]))


@pytest.fixture(scope="module")
def small_data():
    return similarity_data.build(train_per_family=2, eval_per_family=1, eval_pairs=6, unseen_families=8, seed=0)


def test_the_similarity_data_keeps_eval_texts_and_unseen_families_out_of_training(small_data):
    d = small_data
    train_texts = set(d.texts)
    assert not train_texts & set(d.eval_texts())
    assert len(d.unseen_families) == 8 and not set(d.unseen_families) & set(d.train)
    assert {d.family_of[t] for t in train_texts} == set(d.train)
    for split, pairs in d.eval.items():
        families = {d.family_of[t] for a, b, _ in pairs for t in (a, b)}
        assert (families <= set(d.unseen_families)) == (split == "unseen")
        assert not (families & set(d.unseen_families)) == (split == "seen")
        assert sorted(value for *_, value in pairs).count(2) == 6 and len(pairs) == 18   # balanced labels
        assert len({frozenset((a, b)) for a, b, _ in pairs}) == len(pairs)             # distinct pairs
        for a, b, value in pairs:
            fa, fb = d.family_of[a], d.family_of[b]
            assert a != b
            assert value == (2 if fa == fb else 1 if similarity_data.topic(fa) == similarity_data.topic(fb) else 0)


def test_pair_batches_hold_one_same_family_pair_per_family(small_data):
    batches = similarity_data.pair_batches(small_data.train, 8, 3, seed=1)
    assert len(batches) == 3 and all(len(b) == 8 for b in batches)
    for batch in batches:
        families = [small_data.family_of[a] for a, _ in batch]
        assert len(set(families)) == 8
        assert all(a != p and small_data.family_of[p] == small_data.family_of[a] for a, p in batch)
    assert batches == similarity_data.pair_batches(small_data.train, 8, 3, seed=1)        # seeded
    with pytest.raises(ValueError, match="false negative"):
        similarity_data.pair_batches(small_data.train, 25, 1, seed=1)


@pytest.mark.parametrize("override, field", [
    ("disco.unseen_families=3", "disco"), ("disco.contrastive_kd=0", "disco.contrastive_kd"),
    ("disco.arms=[student, student]", "disco"), ("disco.temperature=0", "disco.temperature"),
    ("disco.arms=[bert]", "disco.arms"), ("disco.batch_size=1", "disco.batch_size")])
def test_bad_disco_settings_are_config_errors_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [override])
    with pytest.raises(ConfigError, match="both 0"):
        load_config(None, ["disco.distill_mse=0", "disco.distill_cosine=0"])
    with pytest.raises(ValueError, match="even"):
        similarity_data.choose_unseen(3, seed=0)


def test_a_saved_embedder_loads_back_and_embeds_the_same(tmp_path):
    from distill_ray.models import resolve_model
    from distill_ray.train import build_student_from_config

    body = build_student_from_config(resolve_model("smollm2"), tmp_path / "body", hidden_size=32, num_layers=2,
                                     num_heads=2, num_kv_heads=1, seed=0)
    embedder = Embedder(str(body), out_width=16, layer=1, seed=3)
    with torch.no_grad():   # a head and a body unlike any fresh one
        embedder.head.weight.copy_(_randn(16, 32, seed=4))
        embedder.body.norm.weight.mul_(2.0)
    texts = ["def sat(x: int) -> bool:", "return x + 2 == 28", "sorted(s) == 'abc'"]
    loaded = Embedder.load(embedder.save(tmp_path / "saved"))
    assert loaded.layer == 1 and torch.equal(loaded.encode(texts, 32), embedder.encode(texts, 32))


def test_disco_runs_end_to_end_on_a_tiny_model_and_reuses_the_teachers_vectors(tmp_path, monkeypatch):
    from distill_ray.embed import run as disco_run
    from distill_ray.models import resolve_model
    from distill_ray.train import build_student_from_config

    teacher = build_student_from_config(resolve_model("smollm2"), tmp_path / "teacher", hidden_size=32,
                                        num_layers=2, num_heads=2, num_kv_heads=1, seed=0)
    overrides = [f"teacher.model={teacher}", f"output_dir={tmp_path / 'out'}", "disco.student_layers=1",
                 "disco.train_per_family=2", "disco.eval_per_family=1", "disco.eval_pairs=4", "disco.batch_size=4",
                 "disco.distill_steps=4", "disco.contrastive_steps=2", "disco.teacher_head_steps=3", "disco.lr=1e-2",
                 "disco.teacher_head_lr=0.5",
                 "disco.max_length=32"]
    report = disco_run.run_disco(load_config(None, overrides))
    arms = report["arms"]
    assert set(arms) == set(disco_run.ARM_TEXT)
    assert all(math.isfinite(arm[split]) for arm in arms.values() for split in ("seen", "unseen"))
    assert arms["teacher"] != arms["teacher_raw"]                                            # the head trained
    # the kd arms train on the soft targets (a KL), the others on the diagonal (a cross-entropy)
    assert arms["distilled_contrastive_kd"]["contrastive_loss"] != arms["distilled_contrastive"]["contrastive_loss"]
    assert {(d["arm"], d["minus"]) for d in report["differences"]} == set(disco_run.COMPARISONS)
    assert "contrastive KD" in (tmp_path / "out" / "disco.md").read_text()
    # The saved DisCo student embeds as the one scored: its eval pairs give the same Spearman.
    saved = Embedder.load(report["student"])
    data = similarity_data.build(train_per_family=2, eval_per_family=1, eval_pairs=4, unseen_families=8, seed=0)
    vectors = dict(zip(data.eval_texts(), saved.encode(data.eval_texts(), 32)))
    for split, pairs in data.eval.items():
        rho = losses.spearman(pair_cosines(vectors, pairs), [label for *_, label in pairs])
        assert rho == pytest.approx(arms[disco_run.STUDENT_ARM][split], abs=1e-4), split

    def no_forward(*args, **kwargs):
        raise AssertionError("the teacher's vectors were not read back")

    monkeypatch.setattr(disco_run, "teacher_vectors", no_forward)
    again = disco_run.run_disco(load_config(None, overrides + ["disco.arms=[teacher]"]))
    assert again["arms"]["teacher"] == arms["teacher"]

    # phase 1 on one batch of four texts, again and again: the student's embeddings approach the teacher's
    student = Embedder(str(tmp_path / "out" / "student_cut"))
    texts = ["def sat(x: int) -> bool:", "return x + 2 == 28", "sorted(s) == 'abc'", "len(li) == 5"]
    targets = dict(zip(texts, _randn(4, student.head.out_features, seed=9)))
    history = distill(student, texts, targets, 6, 4, 1e-2, 1.0, 1.0, 32, seed=0)
    assert history[-1] < 0.5 * history[0]
