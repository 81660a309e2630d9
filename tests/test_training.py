"""CMER training: metric, losses, adapters, data, trainer, checkpoints, eval CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from make_captions import write_dataset

from georet.errors import GeoretError
from georet.models import AdaptedCLIP, AdapterConfig, ModelSpec, file_sha256, load_model, open_clip_module
from georet.training import evaluate, load_config, train
from georet.training.data import load_retrieval_data
from georet.training.evaluate import embed_split, scene_prior_matrices
from georet.training.losses import FeatureQueues, hmmc_loss, info_nce
from georet.training.metrics import retrieval_recalls
from georet.training.pairs import PairTable


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("mini"))


ROOT = Path(__file__).resolve().parents[1]


def tiny_clip(seed: int = 0):
    torch.manual_seed(seed)
    return open_clip_module().create_model("georet-tiny")


# -- metric -------------------------------------------------------------------------------
def test_recalls_on_hand_built_matrix():
    # 3 images × 6 captions (2 per image). Image 0: its best caption ranks 1st.
    # Image 1: best own caption ranks 2nd. Image 2: own captions rank 5th and 6th (still inside R@5).
    sims = np.array([[.9, .8, .1, .15, .3, .0],
                     [.1, .9, .8, .2, .3, .4],
                     [.85, .8, .7, .6, .2, .1]])
    caption_image = np.array([0, 0, 1, 1, 2, 2])
    m = retrieval_recalls(sims, caption_image)
    assert (m["i2t_r1"], m["i2t_r5"], m["i2t_r10"]) == pytest.approx((100 / 3, 100, 100))
    # t2i rank of the true image per caption: c0:0 c1:1 c2:0 c3:1 c4:2 c5:1
    assert (m["t2i_r1"], m["t2i_r5"], m["t2i_r10"]) == pytest.approx((100 / 3, 100, 100))
    assert m["mR"] == pytest.approx(np.mean([100 / 3, 100, 100, 100 / 3, 100, 100]))


def test_recall_at_5_and_10_differ():
    # Image 0's only caption (index 6) is its 7th best: outside R@1 and R@5, inside R@10.
    # Image 1 owns the other 11 captions and scores them 1.0, image 0's caption 0.0.
    caption_image = np.array([1] * 6 + [0] + [1] * 5)
    sims = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.2, 0.1, 0.05, 0.0],
                     (caption_image == 1).astype(float)])
    m = retrieval_recalls(sims, caption_image)
    assert (m["i2t_r1"], m["i2t_r5"], m["i2t_r10"]) == (50.0, 50.0, 100.0)
    assert (m["t2i_r1"], m["t2i_r5"], m["t2i_r10"]) == (100.0, 100.0, 100.0)


def test_ties_count_against_the_query():
    caption_image = np.repeat(np.arange(10), 5)
    collapsed = np.ones((10, 50))  # every image and caption embedded identically
    m = retrieval_recalls(collapsed, caption_image)
    assert m["i2t_r1"] == 0 and m["t2i_r1"] == 0 and m["t2i_r10"] == 100  # 9 ties ahead: rank 9 < 10
    broken = retrieval_recalls(np.full((10, 50), np.nan), caption_image)  # a diverged model scores nothing
    assert broken["mR"] == retrieval_recalls(collapsed, caption_image)["mR"] < 20


def test_perfect_and_reversed_rankings():
    caption_image = np.repeat(np.arange(20), 5)
    perfect = (caption_image[None, :] == np.arange(20)[:, None]).astype(float)
    assert retrieval_recalls(perfect, caption_image)["mR"] == 100
    worst = retrieval_recalls(-perfect, caption_image)
    assert worst["i2t_r10"] == 0 and worst["t2i_r10"] == 0


def test_caption_queries_can_rank_with_their_own_scores():
    # 2 images × 2 captions. Image queries read `sims` (both right); caption queries read `flipped`
    # (both wrong), as a query-time prior that depends on which side asks does.
    sims = np.array([[0.9, 0.1], [0.1, 0.9]])
    flipped = sims[::-1]
    m = retrieval_recalls(sims, np.array([0, 1]), caption_query_similarity=flipped)
    assert (m["i2t_r1"], m["t2i_r1"], m["t2i_r5"]) == (100.0, 0.0, 100.0)
    assert m["mR"] == pytest.approx(500 / 6)
    with pytest.raises(ValueError, match="needs the shape of similarity"):
        retrieval_recalls(sims, np.array([0, 1]), caption_query_similarity=sims[:1])


def test_scene_prior_reads_no_query_image_label(mini):
    test = load_retrieval_data(mini, "test")
    model = load_model(ModelSpec("georet-tiny", None), device="cpu")
    image_feats, text_feats = embed_split(model, test)
    image_queries, caption_queries = scene_prior_matrices(model, test, image_feats, text_feats)
    relabelled = dataclasses.replace(test, scenes=test.scenes[3:] + test.scenes[:3])  # every label wrong
    wrong_image_queries, wrong_caption_queries = scene_prior_matrices(model, relabelled, image_feats, text_feats)
    # image queries: scenes predicted from pixels, whatever the metadata says
    np.testing.assert_array_equal(wrong_image_queries, image_queries)
    # the gallery reads its metadata: image i's row is the captions' probability of its (shifted) label
    np.testing.assert_array_equal(wrong_caption_queries, np.roll(caption_queries, -3, axis=0))
    assert not np.allclose(wrong_caption_queries, caption_queries)


# -- losses -------------------------------------------------------------------------------
def test_info_nce_masks_sibling_captions():
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    txt = img.clone()
    # rows 0 and 1 share an image: caption 1 is close to caption 0 but not a duplicate,
    # so only the shared image id can exempt it from being a negative
    txt[1] = torch.nn.functional.normalize(img[0] + 0.3 * img[1], dim=-1)
    with_siblings = info_nce(img, txt, 10.0, torch.tensor([0, 0, 1, 2]))
    strangers = info_nce(img, txt, 10.0, torch.tensor([0, 1, 2, 3]))
    assert with_siblings < strangers  # the duplicate is not punished as a negative


def test_duplicate_captions_of_other_images_are_not_negatives():
    img = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    txt[2] = txt[0]  # images 0 and 2 have the same caption text
    logits = 10.0 * img @ txt.T
    keep = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool)  # rows 0 and 2 ignore each other
    ce = torch.nn.functional.cross_entropy
    expected = 0.5 * (ce(logits.masked_fill(~keep, float("-inf")), torch.arange(3))
                      + ce(logits.T.masked_fill(~keep, float("-inf")), torch.arange(3)))
    assert info_nce(img, txt, 10.0, torch.tensor([0, 1, 2])).item() == pytest.approx(expected.item(), rel=1e-5)

    queue = FeatureQueues(size=2, dim=8)
    queue.push(img[2:], txt[2:], torch.tensor([5]))  # another image, same caption as anchor 0
    assert queue.loss(img[:1], txt[:1], 10.0, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-6)


def test_hmmc_is_the_sum_of_its_terms():
    f = [torch.nn.functional.normalize(torch.randn(5, 8), dim=-1) for _ in range(4)]
    ids = torch.arange(5)
    expected = info_nce(f[0], f[1], 5.0, ids) + 0.5 * info_nce(f[0], f[2], 5.0, ids) + 2 * info_nce(f[1], f[3], 5.0, ids)
    assert hmmc_loss(*f, 5.0, ids, 0.5, 2.0) == pytest.approx(expected.item())


def test_queue_is_fifo_detached_and_masks_same_image():
    queue = FeatureQueues(size=4, dim=3)
    assert queue.loss(torch.ones(1, 3), torch.ones(1, 3), 1.0, torch.tensor([0])).item() == 0
    feats = torch.eye(3, requires_grad=True)
    queue.push(feats, feats, torch.tensor([0, 1, 2]))
    queue.push(feats[:2], feats[:2], torch.tensor([3, 4]))
    assert sorted(queue.ids.tolist()) == [1, 2, 3, 4] and not queue.images.requires_grad  # id 0 left first
    anchor = torch.tensor([[1.0, 0, 0]])
    # Only same-image entries in the queue -> every negative masked -> loss 0.
    only_self = FeatureQueues(size=2, dim=3)
    only_self.push(anchor, anchor, torch.tensor([7]))
    assert only_self.loss(anchor, anchor, 10.0, torch.tensor([7])).item() == pytest.approx(0.0, abs=1e-6)
    # A queued pair from another image, as close as the positive but with different text: loss = log 2.
    text = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0, 0.0]]), dim=-1)
    other = FeatureQueues(size=2, dim=3)
    other.push(torch.tensor([[1.0, 0, 0]]), torch.nn.functional.normalize(torch.tensor([[1.0, -1.0, 0]]), dim=-1),
               torch.tensor([8]))
    assert other.loss(anchor, text, 10.0, torch.tensor([7])).item() == pytest.approx(math.log(2), abs=1e-5)


def test_masked_queue_entries_keep_a_learnable_scale_finite():
    queue = FeatureQueues(size=4, dim=3)
    feats = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    queue.push(feats, feats, torch.tensor([0, 1, 2, 3]))
    log_scale = torch.tensor(2.0, requires_grad=True)
    queue.loss(feats[:2], feats[:2], log_scale.exp(), torch.tensor([0, 1])).backward()  # ids 0, 1 masked
    assert torch.isfinite(log_scale.grad)


# -- adapters -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["frozen", "full", "mrs", "focus"])
def test_adapted_model_starts_equal_to_frozen(method):
    tokens = open_clip_module().get_tokenizer("georet-tiny")(["a river", "forest"])
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = tiny_clip()
        expected = ref.encode_image(images), ref.encode_text(tokens)
        adapted = AdaptedCLIP(tiny_clip(), AdapterConfig(method)).eval()
        assert torch.allclose(adapted.encode_image(images), expected[0], atol=1e-5)
        assert torch.allclose(adapted.encode_text(tokens), expected[1], atol=1e-5)


def _backward(adapted):
    tokens = open_clip_module().get_tokenizer("georet-tiny")(["a river", "forest", "beach"])
    img = adapted.encode_image(torch.randn(3, 3, 64, 64), normalize=True)
    txt = adapted.encode_text(tokens, normalize=True)
    info_nce(img, txt, 10.0, torch.arange(3)).backward()
    return {n: p.grad for n, p in adapted.named_parameters()}


def test_focus_adapter_gradients_stay_in_the_side_branch():
    adapted = AdaptedCLIP(tiny_clip(), AdapterConfig("focus"))
    with torch.no_grad():  # the side branches' zero-initialised outputs, opened
        torch.nn.init.normal_(adapted.image_side.up.weight, std=0.1)
        torch.nn.init.normal_(adapted.text_side.up.weight, std=0.1)
    grads = _backward(adapted)
    for name, grad in grads.items():
        if name.startswith("clip.") and not name.endswith("logit_scale"):
            assert grad is None, f"gradient reached the frozen backbone: {name}"
    side = {n: g for n, g in grads.items() if n.startswith(("image_side.", "text_side."))}
    assert side and all(g is not None and g.abs().sum() > 0 for n, g in side.items())


def test_focus_backbone_runs_without_graph():
    adapted = AdaptedCLIP(tiny_clip(), AdapterConfig("focus"))
    seen = []
    adapted.clip.visual.transformer.resblocks[0].register_forward_hook(lambda m, i, o: seen.append(o.requires_grad))
    adapted.encode_image(torch.randn(2, 3, 64, 64))
    assert seen == [False]  # no autograd graph is built through the frozen backbone


def test_focus_layer_keeps_the_salient_fraction():
    adapted = AdaptedCLIP(tiny_clip(), AdapterConfig("focus", focus_keep=0.25))
    side = adapted.image_side
    z = torch.randn(2, 16, side.cfg.width)
    valid = torch.ones(2, 16, dtype=torch.bool)
    valid[1, 8:] = False  # padding never survives the focus layer
    kept, kept_valid, saliency = side.focus(z, valid)
    assert kept.shape == (2, 4, side.cfg.width) and bool(kept_valid[0].all())
    full = torch.sigmoid(side.score(z)).squeeze(-1).masked_fill(~valid, 0.0)
    assert torch.allclose(saliency.sort(dim=1).values, full.topk(4, dim=1).values.sort(dim=1).values)
    assert bool(kept_valid[1].all()) and (saliency[1] > 0).all()


def test_mrs_adapter_trains_only_the_shared_adapter():
    adapted = AdaptedCLIP(tiny_clip(), AdapterConfig("mrs"))
    with torch.no_grad():
        for layer in (*adapted.mrs.up.values(), adapted.mrs.up_shared):
            layer.weight.normal_(0, 0.02)
    grads = _backward(adapted)
    assert all(g is None for n, g in grads.items() if n.startswith("clip.") and not n.endswith("logit_scale"))
    assert all(grads[n] is not None for n in grads if n.startswith("mrs."))


def test_mrs_adapter_has_016m_parameters_on_vit_b_32():
    torch.manual_seed(0)
    adapted = AdaptedCLIP(open_clip_module().create_model("ViT-B-32"), AdapterConfig("mrs"))
    assert adapted.count_trainable() == 161_088


# -- data ---------------------------------------------------------------------------------
def test_karpathy_and_precomp_give_the_same_split(mini):
    js = load_retrieval_data(mini, "test")
    pc = load_retrieval_data(mini.parent / "precomp", "test", image_root=mini.parent / "images")
    assert len(js) == len(pc) == 9 and js.captions == pc.captions
    assert list(js.caption_image) == list(pc.caption_image) == list(np.repeat(np.arange(9), 5))
    assert js.scenes == pc.scenes and set(js.scenes) == {"forest", "beach", "river"}
    train_part, val_part = load_retrieval_data(mini, "train").split_validation(0.2, seed=1)
    assert len(train_part) + len(val_part) == 15 and not set(train_part.images) & set(val_part.images)


def test_validation_can_be_drawn_like_a_test_split_of_images_with_distinct_captions(mini):
    split = load_retrieval_data(mini, "train")
    same = {0, 4, 7, 9, 12}  # these images get 5 identical captions, like half of RSICD's train images
    split.captions = [f"the same words for image {i}" if i in same else c
                      for c, i in zip(split.captions, split.caption_image.tolist())]
    for seed in range(5):
        train_part, val_part = split.split_validation(0.2, seed, min_distinct_captions=2)
        assert len(val_part) == 3 and len(train_part) == 12
        assert not {split.images.index(p) for p in val_part.images} & same
        assert set(train_part.images) | set(val_part.images) == set(split.images)
        assert len(train_part.captions) + len(val_part.captions) == len(split.captions)
    with pytest.raises(GeoretError, match="only 10 images have 2 distinct captions; validation needs 11"):
        split.split_validation(0.75, 0, min_distinct_captions=2)


def test_scene_label_augmentation(mini):
    split = load_retrieval_data(mini, "train")
    train_part, val_part = split.split_validation(0.2, seed=0)
    table = PairTable.build(train_part, val_part)
    pairs = table.pairs()
    scene = train_part.scenes[int(train_part.caption_image[0])]
    assert table.texts[pairs.text[0]] == train_part.captions[0]
    assert table.texts[pairs.scene_text[0]] == f"an aerial image of {scene}. {train_part.captions[0]}"
    assert len(pairs) == len(train_part.captions) and set(pairs.image) == set(table.rows(train_part).image)
    # validation captions are never scene-prefixed: they are not even in the table that way
    assert not any(t.startswith("an aerial image of") for t in (table.texts[r] for r in table.rows(val_part).text))


# -- trainer ------------------------------------------------------------------------------
def _config(mini, out, method, **train):
    overrides = [f"data.path={mini}", "model.arch=georet-tiny", "model.pretrained=null", f"method.name={method}",
                 "train.batch_size=8", "train.max_steps=3", "train.warmup_steps=1", "train.eval_every_steps=3",
                 f"train.out_dir={out}", "train.device=cpu", "data.val_fraction=0.2", "train.progress=false"]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return overrides


def test_training_config_reaches_the_validation_split(mini, tmp_path):
    # every mini image has 5 distinct captions: asking for 6 leaves no image eligible for validation
    with pytest.raises(GeoretError, match="only 0 images have 6 distinct captions; validation needs 3"):
        train(load_config(None, _config(mini, tmp_path, "focus") + ["data.val_min_distinct_captions=6"]))


@pytest.mark.parametrize("method,loss", [("focus", "infonce"), ("mrs", "hmmc"), ("full", "infonce")])
def test_training_steps_write_plug_in_checkpoints(mini, tmp_path, method, loss):
    overrides = _config(mini, tmp_path / method, method) + [f"loss.name={loss}", "loss.queue_size=16",
                                                           "scene_aug.train_p=0.5"]
    summary = train(load_config(None, overrides))
    assert summary["steps"] == 3 and summary["best_val"]["step"] == 3
    ckpt = torch.load(tmp_path / method / "best.pt", weights_only=True)
    assert ckpt["method"] == method and ckpt["preprocess"]["size"] == [64, 64] and ckpt["config"]["loss"]["name"] == loss
    adapted = AdaptedCLIP(tiny_clip(), AdapterConfig(method, **ckpt["method_config"]))
    assert set(ckpt["state_dict"]) == {n for n, p in adapted.named_parameters() if p.requires_grad}

    # The checkpoint plugs into the model factory (and so into `georet index --checkpoint`).
    plain = load_model(ModelSpec("georet-tiny", None), device="cpu")
    trained = load_model(ModelSpec("georet-tiny", None, str(tmp_path / method / "best.pt")), device="cpu")
    assert trained.identity["checkpoint_id"] == file_sha256(tmp_path / method / "best.pt")
    assert not np.allclose(trained.encode_text(["a river"]), plain.encode_text(["a river"]), atol=1e-6)
    # the saved best checkpoint reproduces the validation figures it was selected by
    _, val = load_retrieval_data(mini, "train").split_validation(0.2, 0)
    selected = {k: v for k, v in summary["best_val"].items() if k != "step"}
    assert evaluate(trained, val) == pytest.approx(selected, abs=1e-6)


def test_training_resumes_where_it_stopped(mini, tmp_path, monkeypatch):
    """A run killed after 3 of its 5 steps and run again ends with the weights, optimiser moments and negative
    queues of a run that never stopped (batches, augmentations and views are drawn per step)."""
    queue = ["loss.queue_size=16"]
    recipe = _config(mini, tmp_path / "resume", "focus", checkpoint_every_steps=1, max_steps=5) + queue
    out = tmp_path / "resume"
    real_step, steps = torch.optim.AdamW.step, []

    def dies_in_step_4(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 4:
            raise KeyboardInterrupt  # as a kill: the state of step 3 is on disk, nothing after it
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", dies_in_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, recipe))
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert torch.load(out / "resume.pt", weights_only=False)["step"] == 3
    second = train(load_config(None, recipe))
    assert second["steps"] == 5 and [h["step"] for h in second["history"]] == [5]
    straight = tmp_path / "straight"
    train(load_config(None, _config(mini, straight, "focus", checkpoint_every_steps=1, max_steps=5) + queue))
    resumed, whole = (torch.load(d / "resume.pt", weights_only=False) for d in (out, straight))
    assert resumed["step"] == whole["step"] == 5
    assert resumed["trainable"].keys() == whole["trainable"].keys()
    for name, tensor in whole["trainable"].items():
        torch.testing.assert_close(resumed["trainable"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    moments = [(a, b) for s_a, s_b in zip(resumed["optimizer"]["state"].values(), whole["optimizer"]["state"].values())
               for a, b in ((s_a["exp_avg"], s_b["exp_avg"]), (s_a["exp_avg_sq"], s_b["exp_avg_sq"]))]
    assert len(moments) > 2
    for a, b in moments:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for name, tensor in whole["queues"].items():
        torch.testing.assert_close(resumed["queues"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("override, message", [
    ("train.learning_rate=1", "unknown key 'train.learning_rate' (known in train: epochs, max_steps"),
    ("loss.name=hmcc", "config loss.name: 'hmcc' is not one of infonce, hmmc"),
    ("train.device=gpu", "'gpu' is not one of auto, cpu, cuda, mps"),
    ("train.epochs=1.5", "config train.epochs: expected a whole number, got 1.5"),
    ("train.lr=fast", "config train.lr: expected a number, got 'fast'"),
    ("train.amp=1", "config train.amp: expected true or false, got 1"),
    ("method.focus_keep=2", "focus_keep must lie in (0, 1]"),
    ("nonsense.key=1", "unknown key 'nonsense' (known: model, method, loss, scene_aug, data, train)"),
    ("train=3", "config train: expected a section (mapping), got 3"),
    ("train.lr", "overrides: take key=value"),
    ("method.name=lit", "config method.name: 'lit' is not one of frozen, full, mrs, focus"),
])
def test_config_refuses_what_it_does_not_know(override, message):
    with pytest.raises(GeoretError) as err:
        load_config(None, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_types_and_method_keys():
    config = load_config(None, ["method.bottleneck=32", "train.lr=1e-3", "data.scenes=[airport, river]",
                                "data.tile_size=200m", "model.pretrained=null", "method.focus_keep=1"])
    assert config.method.bottleneck == 32 and config.train.lr == 0.001  # YAML reads 1e-3 as text: still a number
    assert config.data.scenes == ("airport", "river") and config.data.tile_size == "200m"
    assert config.model.pretrained is None and config.method.focus_keep == 1.0
    assert AdaptedCLIP(tiny_clip(), AdapterConfig("mrs", bottleneck=config.method.bottleneck)).mrs.down["image"].out_features == 32


def test_each_model_family_keeps_its_own_mrs_settings_unless_a_recipe_sets_them():
    from georet.training.trainer import tower_model_config

    clip_adapter = AdaptedCLIP(tiny_clip(), AdapterConfig("mrs")).mrs
    assert clip_adapter.dropout == 0.5  # MRSAdapter's default, for open_clip CLIPs
    tower = ["method.name=mrs"]  # a recipe naming no model trains the package's default, georet-base
    assert tower_model_config(load_config(None, tower)).mrs_dropout == 0.1  # georet-base.json's, not the trainer's
    chosen = tower_model_config(load_config(None, [*tower, "method.adapter_dropout=0.3", "method.bottleneck=16"]))
    assert (chosen.mrs_dropout, chosen.mrs_bottleneck, chosen.mrs_shared) == (0.3, 16, 64)


def test_recipes_extend_the_base(tmp_path):
    recipes = Path(__file__).resolve().parents[1] / "training" / "configs"
    base, rsicd = load_config(recipes / "cmer_base.yaml"), load_config(recipes / "rsicd_cmer.yaml")
    assert (rsicd.loss.queue_size, rsicd.train.epochs, rsicd.data.path, rsicd.train.out_dir) == \
        (4096, 20, "data/rsicd_precomp", "runs/rsicd_cmer")
    assert (rsicd.method, rsicd.scene_aug, rsicd.train.lr) == (base.method, base.scene_aug, base.train.lr)
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(GeoretError, match="extend each other in a loop"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "typo.yaml").write_text("extends: b.yaml\ntrain:\n  learning_rate: 0.1\n")
    (tmp_path / "b.yaml").write_text("train:\n  lr: 0.2\n")
    with pytest.raises(GeoretError, match="unknown key 'train.learning_rate'"):
        load_config(tmp_path / "typo.yaml")


def test_checkpoints_are_verified(mini, tmp_path):
    from georet.models import read_checkpoint

    train(load_config(None, _config(mini, tmp_path / "run", "focus")))
    good = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert read_checkpoint(tmp_path / "run" / "best.pt").adapter == AdapterConfig("focus")
    for name, payload, message in [
        ("old.pt", {**good, "format": "georet-checkpoint/0"}, "checkpoint format 'georet-checkpoint/0' is not"),
        ("method.pt", {**good, "method": "lora"}, "uses method 'lora'"),
        ("options.pt", {**good, "method_config": {"tap_evrey": 2}}, "bad method_config"),
        ("plain.pt", {"weights": 1}, "not a georet checkpoint"),
    ]:
        torch.save(payload, tmp_path / name)
        with pytest.raises(GeoretError, match=message):
            read_checkpoint(tmp_path / name)
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(GeoretError, match="not a readable torch checkpoint"):
        load_model(ModelSpec("georet-tiny", None, str(tmp_path / "junk.pt")), device="cpu")
    with pytest.raises(GeoretError, match="trained on georet-tiny, not georet-small"):
        load_model(ModelSpec("georet-small", "bundled", str(tmp_path / "run" / "best.pt")), device="cpu")
    with pytest.raises(GeoretError, match="checkpoint applies to open_clip models; georet-base takes its trained weights with pretrained FILE"):
        load_model(ModelSpec(checkpoint=str(tmp_path / "run" / "best.pt")), device="cpu")


@pytest.mark.slow
def test_tower_model_trains_a_head_ensemble_whose_weights_plug_in(mini, tmp_path):
    out, cache = tmp_path / "base", tmp_path / "cache"
    overrides = [f"data.path={mini}", "model.arch=georet-base", "model.pretrained=null", "method.name=frozen",
                 "model.head_members=2", "train.batch_size=8", "train.max_steps=3", "train.warmup_steps=1",
                 "train.eval_every_steps=3", f"train.out_dir={out}", f"train.cache_dir={cache}", "train.device=cpu",
                 "data.val_fraction=0.2", "train.progress=false"]
    summary = train(load_config(None, overrides))
    assert [m["seed"] for m in summary["members"]] == [0, 1] and summary["steps"] == 6
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["images", "texts"]
    # the weights file carries its config: the factory builds the 2-head ensemble it was trained as, and
    # scores the validation split as training did (from float16 cached features: within rounding)
    model = load_model(ModelSpec("georet-base", str(out / "best.pt")), device="cpu")
    assert model.model.cfg.head_members == 2 and model.model.cfg.method == "frozen"
    _, val = load_retrieval_data(mini, "train").split_validation(0.2, 0)
    assert evaluate(model, val)["mR"] == pytest.approx(summary["best_val"]["mR"], abs=0.5)
    plain = load_model(ModelSpec("georet-base", None), device="cpu")
    assert not np.allclose(model.encode_text(["a river"]), plain.encode_text(["a river"]), atol=1e-4)
    # one command writes the package weights from the run (here to another file): the same model
    exported = tmp_path / "exported.pt"
    run = subprocess.run([sys.executable, str(ROOT / "training" / "export_default.py"), str(out / "best.pt"),
                          "--out", str(exported)], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith(f"wrote {exported}"), run.stderr
    again = load_model(ModelSpec("georet-base", str(exported)), device="cpu")
    assert np.allclose(again.encode_text(["a river"]), model.encode_text(["a river"]), atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (["model.arch=georet-tiny", "model.pretrained=null", "model.head_members=2"],
     "model.head_members applies to tower models"),
    (["model.arch=georet-base", "model.pretrained=null", "method.side_ratio=0.5"],
     "method.side_ratio applies to open_clip models"),
    (["model.arch=georet-base", "model.pretrained=bundled"], "model.pretrained must be null for georet-base"),
    (["model.arch=georet-base", "model.pretrained=null", "method.name=full", "model.head_members=1",
      "train.cache_features=true"],
     "train.cache_features needs frozen towers: method full trains them"),
    (["model.arch=georet-base", "model.pretrained=null", "method.name=focus"],
     "a head ensemble (head_members 4) trains heads on cached frozen features"),
])
def test_training_refuses_options_of_the_other_family(mini, tmp_path, overrides, message):
    base = [f"data.path={mini}", f"train.out_dir={tmp_path}", "train.device=cpu", "data.val_fraction=0.2",
            f"train.cache_dir={tmp_path / 'cache'}", "train.max_steps=1", "train.batch_size=4", "train.progress=false"]
    with pytest.raises(GeoretError) as err:
        train(load_config(None, base + overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_train_and_eval_cli(mini, tmp_path):
    out = tmp_path / "cli"
    run = run_cli("train", "--set", f"data.path={mini}", *sum((["--set", o] for o in _config(mini, out, "focus")[1:]), []),
                  "--json", check=True)
    assert json.loads(run.stdout)["method"] == "focus"
    metrics = json.loads(run_cli("eval", "--data", mini, "--split", "test", "--checkpoint", out / "best.pt",
                                 "--json", check=True).stdout)
    test = load_retrieval_data(mini, "test")
    # the CLI found the checkpoint's base model by itself and reports what the library computes
    expected = evaluate(load_model(ModelSpec("georet-tiny", None, str(out / "best.pt")), device="cpu"), test)
    assert metrics == {**{k: round(v, 2) for k, v in expected.items()}, "images": 9, "captions": 45}
    base = json.loads(run_cli("eval", "--data", mini, "--model", "georet-tiny", "--pretrained", "none",
                              "--scene-prior", "0.5", "--json", check=True).stdout)
    expected = evaluate(load_model(ModelSpec("georet-tiny", None), device="cpu"), test, scene_prior=0.5)
    assert base == {**{k: round(v, 2) for k, v in expected.items()}, "images": 9, "captions": 45}
    err = run_cli("eval", "--data", tmp_path / "nothing.json")
    assert err.returncode == 1 and err.stderr.startswith("Error: no dataset at")


RECIPES = sorted((ROOT / "training" / "configs").glob("*_cmer.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipes_run_two_steps_on_random_vit_b_32(recipe, mini, tmp_path):
    config = load_config(recipe, [f"data.path={mini}", "model.pretrained=null", "train.batch_size=4",
                                  "train.max_steps=2", "train.eval_every_steps=2", "loss.queue_warmup_steps=1",
                                  f"train.out_dir={tmp_path}", "train.device=cpu", "train.progress=false"])
    assert config.model.arch == "ViT-B-32" and config.method.name == "focus" and config.loss.queue_size > 0
    summary = train(config)
    assert summary["steps"] == 2 and (tmp_path / "best.pt").is_file()


def test_tiled_scenes_from_raster_and_landcover(tmp_path, rasters):
    import geopandas as gpd
    import rasterio
    import shapely

    from georet.training.data import tiled_scenes

    with rasterio.open(rasters["utm"]) as src:
        left, bottom, right, top = src.bounds
    layer = gpd.GeoDataFrame({"lc": ["water", "forest"]}, crs="EPSG:32631", geometry=[
        shapely.box(left, bottom, left + 1280, top), shapely.box(left + 1280, bottom, right, top)])
    layer.to_file(tmp_path / "lc.gpkg")
    split = tiled_scenes(rasters["utm"], tmp_path / "lc.gpkg", tmp_path / "tiles", tile_size=64, landcover_field="lc")
    assert len(split) == 16 and split.scenes.count("water") == 8
    assert len(split.captions) == 5 * 16 and "water" in split.captions[0]
    assert all(p.is_file() and p.name.startswith(s) for p, s in zip(split.images, split.scenes))

    # The same source straight from a training config: a GIS user adapting the model to a region.
    summary = train(load_config(None, [f"data.raster={rasters['utm']}", f"data.landcover={tmp_path / 'lc.gpkg'}",
                                       "data.landcover_field=lc", "data.tile_size=64", "model.arch=georet-tiny",
                                       "model.pretrained=null", "train.batch_size=8", "train.max_steps=2",
                                       "train.eval_every_steps=2", "data.val_fraction=0.25", "train.device=cpu",
                                       "train.progress=false", f"train.out_dir={tmp_path / 'run'}"]))
    assert summary["steps"] == 2 and (tmp_path / "run" / "best.pt").is_file()


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        adapted = AdaptedCLIP(tiny_clip(), AdapterConfig("full"))
        adapted.grad_checkpointing = checkpointing
        grads.append(_backward(adapted))
    for name, grad in grads[0].items():
        if grad is not None:
            assert torch.allclose(grad, grads[1][name], atol=1e-6), name
