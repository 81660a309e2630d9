"""georet-base's towers: pretrained weights converted faithfully, side branches, weights files, identity."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from georet.errors import GeoretError
from georet.geo import GroundScale
from georet.index.build import model_scale
from georet.models import ModelSpec, file_sha256, load_model
from georet.models.adapters import SideBranch, SideConfig
from georet.models.efficientnet_lite import LITE_VARIANTS, EfficientNetLiteTower
from georet.models.minilm import MiniLMTower
from georet.models.tower_clip import TowerCLIP, TowerCLIPConfig, load_tower_weights, save_tower_weights
from georet.training.ensemble import assemble_heads


@pytest.fixture(scope="module")
def lit_model() -> TowerCLIP:
    model = TowerCLIP(TowerCLIPConfig(method="frozen"))
    model.load_backbones()
    return model.eval()


@pytest.mark.parametrize("variant", ["efficientnet-lite0", "efficientnet-lite2"])
def test_converted_image_tower_reproduces_the_original_port_logits(variant):
    """The timm tower with renamed keys gives the port's ImageNet logits at the port's native size."""
    from efficientnet_lite_pytorch import EfficientNet

    spec = LITE_VARIANTS[variant]
    port = EfficientNet.from_name(variant)
    port.load_state_dict(torch.load(spec.weights_path(), map_location="cpu", weights_only=True))
    tower = EfficientNetLiteTower(variant)
    tower.load_pretrained()
    x = torch.randn(2, 3, spec.native_size, spec.native_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = port.eval()(x)
        got = tower.trunk.eval()(x)
    assert expected.shape == (2, 1000)
    assert torch.allclose(got, expected, atol=1e-4), float((got - expected).abs().max())


@pytest.mark.parametrize("variant", sorted(LITE_VARIANTS))
def test_declared_stage_widths_are_timms(variant):
    """A lazy tower sizes its side branches from the declared widths: they must be what timm builds."""
    tower = EfficientNetLiteTower(variant, taps=tuple(range(7)))
    built = [(b[-1].conv_pwl if hasattr(b[-1], "conv_pwl") else b[-1].conv_pw).out_channels for b in tower.trunk.blocks]
    assert tuple(built) == LITE_VARIANTS[variant].stage_channels and tower.trunk.num_features == tower.pooled_dim


def test_lazy_image_tower_builds_on_its_first_image_folded_and_matches_the_eager_one(lit_model):
    from georet.models import load_model

    model = load_model(device="cpu", image_runtime="torch")  # georet-base through the factory: lazy image trunk
    assert not model.model.visual.built
    model.encode_text(["airport"])
    assert not model.model.visual.built  # text queries never build it
    images = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(1))
    got = model.encode_images(images)
    assert model.model.visual.built and not model.model.visual.trunk.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.model.visual.trunk.modules())
    from georet.models import BUNDLED_WEIGHTS

    eager = TowerCLIP(model.model.cfg)  # built at once, as training builds it
    eager.load_backbones()
    load_tower_weights(eager, BUNDLED_WEIGHTS["georet-base"])
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(eager.eval().encode_image(images), dim=-1).numpy()
    assert np.allclose(got, expected, atol=1e-5)


def test_folding_batch_norm_keeps_the_taps_and_pooled_feature(lit_model):
    tower = EfficientNetLiteTower("efficientnet-lite0", taps=(2, 4, 6))
    tower.load_pretrained()
    tower.eval()
    images = torch.rand(3, 3, 150, 150, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        taps, pooled = tower(images)
        norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in tower.trunk.modules())
        tower.fold_batch_norm()
        folded_taps, folded_pooled = tower(images)
    assert norms == 49 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in tower.trunk.modules())
    for tap, folded in zip([*taps, pooled], [*folded_taps, folded_pooled]):
        torch.testing.assert_close(folded, tap, atol=1e-4, rtol=1e-4)


def test_minilm_tower_reproduces_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    tower = MiniLMTower(context_length=32)
    tower.load_pretrained()
    texts = ["many planes are parked next to a long building in an airport .", "a river", "Solar farm, highway!"]
    with torch.no_grad():
        _, mask, pooled = tower.eval()(tower.tokenizer()(texts))
    reference = SentenceTransformer(str(tower.folder), device="cpu").encode(texts, convert_to_tensor=True)
    assert mask.sum(1).tolist()[1] == 4  # [CLS] a river [SEP]
    assert torch.allclose(torch.nn.functional.normalize(pooled, dim=-1), reference, atol=1e-5)


def test_padding_does_not_change_text_features(lit_model):
    """Pad tokens are masked: the same text gives the same pooled feature and side-branch output at any padding."""
    short, padded = MiniLMTower(context_length=8), lit_model.text
    short.load_state_dict(padded.state_dict())
    side = SideBranch(padded.tap_dims, padded.pooled_dim, SideConfig(dropout=0.0)).eval()
    torch.nn.init.normal_(side.up.weight)
    with torch.no_grad():
        a_taps, a_mask, a_pooled = short.eval()(short.tokenizer()(["a river"]))
        b_taps, b_mask, b_pooled = padded(padded.tokenizer()(["a river"]))
        assert torch.allclose(a_pooled, b_pooled, atol=1e-5)
        assert torch.allclose(side(a_taps, a_mask), side(b_taps, b_mask), atol=1e-4)


def test_focus_branch_starts_equal_to_heads_only_and_keeps_the_top_fraction(lit_model):
    focus = TowerCLIP(TowerCLIPConfig(method="focus"))
    focus.load_state_dict(lit_model.state_dict(), strict=False)
    images = torch.randn(2, 3, 150, 150)
    with torch.no_grad():
        assert torch.allclose(focus.eval().encode_image(images), lit_model.encode_image(images), atol=1e-5)
        taps, _ = focus.image_features(images)
        tokens = sum(t.shape[1] for t in taps)  # 10x10 + 5x5 positions at 150 px
        z = focus.image_side.norm_in(torch.cat([p(t) for p, t in zip(focus.image_side.inputs, taps)], 1))
        kept, valid, weights = focus.image_side.focus(z, torch.ones(z.shape[:2], dtype=torch.bool))
    assert tokens == 125
    assert kept.shape[1] == math.ceil(0.5 * tokens) and bool(valid.all())
    saliency = torch.sigmoid(focus.image_side.score(z).squeeze(-1))
    assert torch.allclose(weights.sort(1, descending=True).values, saliency.topk(kept.shape[1], 1).values)


def test_only_the_methods_parameters_train():
    for method, extra in (("focus", "image_side."), ("frozen", None), ("mrs", "mrs.")):
        model = TowerCLIP(TowerCLIPConfig(method=method))
        trained = {n for n, _ in model.named_parameters() if model.is_trainable(n)}
        assert not any(n.startswith(("visual.", "text.")) for n in trained)
        assert "image_head.weight" in trained and "logit_scale" in trained
        assert {n.split(".")[0] + "." for n in trained} - {"image_head.", "text_head.", "logit_scale."} == \
            ({extra, "text_side."} if method == "focus" else {extra} if extra else set())
    full = TowerCLIP(TowerCLIPConfig(method="full"))
    assert all(full.is_trainable(n) for n, _ in full.named_parameters())


def test_config_is_strict():
    with pytest.raises(GeoretError, match="unknown model config key.*image_twoer"):
        TowerCLIPConfig.from_dict({"image_twoer": "efficientnet-lite0"})
    with pytest.raises(GeoretError, match="unknown image_side key.*keep"):
        TowerCLIPConfig.from_dict({"image_side": {"keep": 0.5}})
    with pytest.raises(GeoretError, match="unknown image tower 'efficientnet-lite9'"):
        TowerCLIPConfig.from_dict({"image_tower": "efficientnet-lite9"})


def test_mlp_heads_start_as_the_linear_heads_whose_weights_they_load():
    linear = TowerCLIP(TowerCLIPConfig(method="frozen"))
    with_mlp = TowerCLIP(TowerCLIPConfig(method="frozen", head_hidden=32))
    missing, unexpected = with_mlp.load_state_dict(linear.state_dict(), strict=False)
    assert sorted(missing) == sorted(f"{side}_head.{layer}.{p}" for side in ("image", "text")
                                     for layer in ("hidden", "out") for p in ("weight", "bias"))
    assert unexpected == []
    pooled = torch.randn(3, linear.visual.pooled_dim)
    with torch.no_grad():
        assert torch.equal(with_mlp.image_head(pooled), linear.image_head(pooled))
        torch.nn.init.normal_(with_mlp.image_head.out.weight)
        mlp = with_mlp.image_head.out(torch.nn.functional.gelu(with_mlp.image_head.hidden(pooled)))
        assert torch.allclose(with_mlp.eval().image_head(pooled), linear.image_head(pooled) + mlp, atol=1e-5)
        assert not torch.allclose(with_mlp.image_head(pooled), linear.image_head(pooled), atol=1e-2)
    with pytest.raises(GeoretError, match="head_hidden must be >= 0"):
        TowerCLIPConfig(head_hidden=-1)


def test_head_ensemble_turns_members_trained_apart_into_one_space():
    """A member that is another member turned by an orthogonal matrix (the freedom seeds leave a contrastive head)
    is turned back exactly: the assembled ensemble embeds as that member alone."""
    torch.manual_seed(0)
    cfg = TowerCLIPConfig(method="frozen", embed_dim=16, head_hidden=8)
    first, turned = TowerCLIP(cfg), TowerCLIP(cfg)
    for head in (first.image_head, first.text_head):
        torch.nn.init.normal_(head.out.weight, std=0.1)
    turned.load_state_dict(first.state_dict())
    rotation = torch.linalg.qr(torch.randn(16, 16))[0]
    images, texts = torch.randn(40, first.visual.pooled_dim), torch.randn(40, first.text.pooled_dim)
    with torch.no_grad():
        for head in (turned.image_head, turned.text_head):
            head.rotate_output(rotation)
        assert torch.allclose(turned.eval().image_head(images), first.eval().image_head(images) @ rotation, atol=1e-5)
        ensemble = assemble_heads([first, turned], images, texts)
        assert ensemble.cfg.head_members == 2 and ensemble.visual is first.visual
        expected = torch.nn.functional.normalize(first.image_head(images), dim=-1)
        assert torch.allclose(ensemble.image_head(images), expected, atol=1e-5)
        assert torch.allclose(ensemble.text_head(texts), torch.nn.functional.normalize(first.text_head(texts), dim=-1),
                              atol=1e-5)
    with pytest.raises(GeoretError, match="single-head frozen-tower models of one config"):
        assemble_heads([first, TowerCLIP(dataclasses.replace(cfg, embed_dim=8))], images, texts)
    with pytest.raises(GeoretError, match="head_members must be >= 1"):
        TowerCLIPConfig(head_members=0)


def test_weights_file_round_trip_and_refusals(tmp_path, lit_model):
    model = TowerCLIP(TowerCLIPConfig(method="focus"))
    model.load_backbones()
    torch.nn.init.normal_(model.image_side.up.weight)
    path = tmp_path / "w.pt"
    save_tower_weights(path, model, {"note": "test"})
    fresh = TowerCLIP(TowerCLIPConfig(method="focus"))
    fresh.load_backbones()
    load_tower_weights(fresh, path)
    assert torch.equal(fresh.image_side.up.weight, model.image_side.up.weight.half().float())

    with pytest.raises(GeoretError, match="another model config"):
        load_tower_weights(lit_model, path)
    payload = torch.load(path, weights_only=True)
    payload["backbones"]["text"] = "model.safetensors:" + "0" * 64
    torch.save(payload, tmp_path / "other_backbone.pt")
    with pytest.raises(GeoretError, match="trained on text backbone model.safetensors:0000"):
        load_tower_weights(fresh, tmp_path / "other_backbone.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("text_head.bias")
    torch.save(payload, tmp_path / "missing.pt")
    with pytest.raises(GeoretError, match="missing \\['text_head.bias'\\]"):
        load_tower_weights(fresh, tmp_path / "missing.pt")


def test_factory_builds_tower_models_with_backbone_hashes_in_the_identity(tmp_path):
    model = load_model(ModelSpec("georet-base", None), device="cpu")
    identity = model.identity
    image_file = LITE_VARIANTS["efficientnet-lite0"].weights_path()
    text_file = MiniLMTower(taps=(6,)).weights_path()
    assert identity["backbones"] == {"image": f"{image_file.name}:{file_sha256(image_file)}",
                                     "text": f"{text_file.name}:{file_sha256(text_file)}"}
    assert identity["dim"] == 256 and identity["preprocess"]["size"] == [150, 150]
    vectors = model.encode_text(["airport near river", "a river"])
    assert vectors.shape == (2, 256) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(GeoretError, match="checkpoint applies to open_clip models"):
        load_model(dataclasses.replace(ModelSpec("georet-base", None), checkpoint=str(tmp_path / "c.pt")))
    # `georet index` cuts tiles at the scene-chip scale, never below the model's input; a config may declare its own
    assert model_scale(model) == GroundScale(metres=300.0, min_px=150)
    declared = TowerCLIPConfig.from_dict({"image_size": 224, "tile_ground_m": 500})
    model.tile_ground_m = declared.tile_ground_m
    assert model_scale(model) == GroundScale(metres=500.0, min_px=150)
    with pytest.raises(GeoretError, match="tile_ground_m must be positive"):
        TowerCLIPConfig(tile_ground_m=0)


def _synthetic_caches(rng: np.random.Generator, images: int = 12, captions_per_image: int = 2):
    """Feature caches shaped like Lite0 taps (112, 320 channels) and MiniLM layers, with learnable structure:
    each caption's pooled feature is its image's pooled feature projected and noised."""
    from georet.training.feature_cache import FeatureCache

    image_pooled = rng.normal(size=(2, images, 1280)).astype(np.float16)  # two views per image
    projection = rng.normal(size=(1280, 384)) / 36
    text_pooled = np.repeat(image_pooled[0] @ projection, captions_per_image, axis=0)
    text_pooled = (text_pooled + 0.5 * rng.normal(size=text_pooled.shape))[None].astype(np.float16)
    n_text = images * captions_per_image
    image_cache = FeatureCache([rng.normal(size=(2, images, 4, c)).astype(np.float16) for c in (112, 320)],
                               image_pooled)
    text_cache = FeatureCache([rng.normal(size=(1, n_text, 8, 384)).astype(np.float16) for _ in range(2)],
                              text_pooled, np.ones((n_text, 8), dtype=bool))
    return image_cache, text_cache


def test_the_one_loop_restores_the_best_validation_state_and_trains_tower_heads_with_hmmc():
    from georet.training import fit, load_config
    from georet.training.data import RetrievalSplit
    from georet.training.encoders import CachedImages, CachedTexts, TowerEncoder, embed_rows
    from georet.training.pairs import EvalSet, Pairs

    image_cache, text_cache = _synthetic_caches(np.random.default_rng(0))
    caption_image = np.repeat(np.arange(12), 2)
    # training pairs every caption with the wrong image, so validation (the true pairs) gets worse as it trains
    # and the state to keep is an early one, not the last
    pairs = Pairs(np.repeat((np.arange(12) + 5) % 12, 2), np.arange(24), np.arange(24))
    val = EvalSet(np.arange(12), np.arange(24), caption_image)
    val_split = RetrievalSplit([f"{i}.jpg" for i in range(12)], [str(j) for j in range(24)], caption_image,
                               [None] * 12)
    cfg = TowerCLIPConfig(method="frozen", image_size=64)
    heads = {}
    for loss in ("infonce", "hmmc"):
        config = load_config(None, ["train.max_steps=6", "train.batch_size=8", "train.lr=3e-2",
                                    "train.warmup_steps=1", "train.eval_every_steps=2", f"loss.name={loss}",
                                    "train.progress=false"])
        torch.manual_seed(0)
        model = TowerCLIP(cfg)
        for name, param in model.named_parameters():
            param.requires_grad_(model.is_trainable(name))
        encoder = TowerEncoder(model, CachedImages(image_cache, torch.device("cpu")),
                               CachedTexts(text_cache, torch.device("cpu")), torch.device("cpu"))
        result = fit(encoder, pairs, val, val_split, config, seed=0)
        assert [h["step"] for h in result.history] == [2, 4, 6], result.history
        assert result.best["mR"] == max(h["mR"] for h in result.history)
        if loss == "infonce":  # the wrong pairs win: the best state is an early one
            assert result.best["mR"] > result.history[-1]["mR"]
        assert result.best["step"] == next(h["step"] for h in result.history if h["mR"] == result.best["mR"])
        # the model holds the best-on-validation state, not the last one
        images, texts = embed_rows(encoder, val)
        from georet.training import retrieval_recalls
        assert retrieval_recalls(images @ texts.T, caption_image)["mR"] == pytest.approx(result.best["mR"])
        heads[loss] = model.image_head.weight.detach().clone()
    assert not torch.allclose(heads["infonce"], heads["hmmc"])  # the intra-modal terms change the updates


def test_image_views_average_the_quarter_turns_and_the_centre_crop(lit_model):
    """georet-base embeds an image as the mean over its quarter turns (aerial imagery has no up)."""
    turned = TowerCLIP(dataclasses.replace(lit_model.cfg, image_views=4))
    turned.load_backbones()
    turned.load_state_dict(lit_model.state_dict())
    turned.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.stack([lit_model.encode_image(torch.rot90(images, k, dims=(2, 3))) for k in range(4)]).mean(0)
        np.testing.assert_allclose(turned.encode_image(images).numpy(), expected.numpy(), atol=1e-5)
        # the embedding no longer depends on which way is up
        np.testing.assert_allclose(turned.encode_image(torch.rot90(images, 1, dims=(2, 3))).numpy(),
                                   turned.encode_image(images).numpy(), atol=1e-5)
    # an MLP head reads the turn mean of the pooled features, as it was trained to (not the mean of embeddings)
    with_mlp = TowerCLIP(dataclasses.replace(lit_model.cfg, image_views=4, head_hidden=16))
    with_mlp.load_backbones()
    with_mlp.load_state_dict(lit_model.state_dict(), strict=False)
    with_mlp.eval()
    with torch.no_grad():
        torch.nn.init.normal_(with_mlp.image_head.out.weight)
        turn_mean = torch.stack([lit_model.image_features(torch.rot90(images, k, dims=(2, 3)))[1]
                                 for k in range(4)]).mean(0)
        np.testing.assert_allclose(with_mlp.encode_image(images).numpy(), with_mlp.image_head(turn_mean).numpy(),
                                   atol=1e-5)
        per_turn = torch.stack([with_mlp.image_head(lit_model.image_features(torch.rot90(images, k, dims=(2, 3)))[1])
                                for k in range(4)]).mean(0)
        assert not torch.allclose(with_mlp.encode_image(images), per_turn, atol=1e-3)
        # the centre-crop view joins the mean: the middle 48 of 64 px, upsampled back
        with_crop = TowerCLIP(dataclasses.replace(with_mlp.cfg, centre_crop_view=0.75))
        with_crop.load_state_dict(with_mlp.state_dict())
        with_crop.eval()
        crop = torch.nn.functional.interpolate(images[..., 8:56, 8:56], size=(64, 64), mode="bicubic",
                                               align_corners=False)
        view_mean = (4 * turn_mean + lit_model.image_features(crop)[1]) / 5
        np.testing.assert_allclose(with_crop.encode_image(images).numpy(), with_mlp.image_head(view_mean).numpy(),
                                   atol=1e-5)
    with pytest.raises(GeoretError, match="centre_crop_view must lie in"):
        TowerCLIPConfig(centre_crop_view=1.0)
    with pytest.raises(GeoretError, match="image_views must be 1, 2 or 4 quarter turns, got 3"):
        TowerCLIPConfig(image_views=3)


def test_feature_cache_keeps_the_models_own_views_apart_from_the_augmented_ones(tmp_path, lit_model):
    """Validation averages the views inference embeds; the cache must say how many of its views those are."""
    import rasterio
    from PIL import Image

    from georet.models.preprocess import tower_preprocess
    from georet.testing.rasters import write_raster
    from georet.training.feature_cache import FeatureCache, cache_images

    chips = []
    for i in range(2):
        with rasterio.open(write_raster(tmp_path / f"r{i}.tif", size=(64, 64), seed=i)) as src:
            Image.fromarray(src.read().transpose(1, 2, 0)).save(tmp_path / f"c{i}.png")
        chips.append(tmp_path / f"c{i}.png")
    model = TowerCLIP(dataclasses.replace(lit_model.cfg, image_size=64, image_views=4, centre_crop_view=0.75))
    model.visual, model.text = lit_model.visual, lit_model.text
    cache = cache_images(model.eval(), chips, tower_preprocess(64), augmented=2, pooled_only=True, progress=False,
                         sensor=1)
    assert cache.views == 8 and cache.model_views == 5
    assert not np.allclose(cache.pooled[7], cache.pooled[5])  # the sensor view is a view of its own
    cache.save(tmp_path / "cache", {"n": 2})
    loaded = FeatureCache.load(tmp_path / "cache", {"n": 2})
    assert loaded.model_views == 5 and np.array_equal(np.asarray(loaded.pooled), cache.pooled)
    with pytest.raises(GeoretError, match="made for another model or data"):
        FeatureCache.load(tmp_path / "cache", {"n": 3})


def test_sensor_shifts_change_the_look_and_keep_the_image_shape():
    """Each of blur, coarser pixels, haze, colour cast and JPEG happens, and none changes size or dtype."""
    from georet.training.feature_cache import sensor_shift

    image = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
    rng = np.random.default_rng(1)
    shifted = [sensor_shift(image, rng) for _ in range(40)]
    assert all(s.shape == image.shape and s.dtype == np.uint8 for s in shifted)
    changes = [float(np.abs(s.astype(int) - image).mean()) for s in shifted]
    assert min(changes) > 2.0  # never a no-op
    smoothness = [float(np.abs(np.diff(s.astype(int), axis=1)).mean()) for s in shifted]
    assert min(smoothness) < 0.5 * np.abs(np.diff(image.astype(int), axis=1)).mean()  # blur or coarser pixels
    means = [s.mean(axis=(0, 1)) for s in shifted]
    assert max(m[2] - m[0] for m in means) > 10  # a bluish haze or a cast (the image itself is grey on average)


def test_a_focus_models_side_branch_exports_to_onnx_with_torchs_embeddings(tmp_path, monkeypatch):
    """The Focus-Adapter's transformer block has a fused kernel ONNX cannot take: the export uses its plain ops."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = TowerCLIP(TowerCLIPConfig(method="focus", image_size=96))
    model.load_backbones()
    torch.nn.init.normal_(model.image_side.up.weight, std=0.05)  # the branch starts at zero: make it count
    save_tower_weights(tmp_path / "focus.pt", model)
    images = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 3, 96, 96)).astype(np.float32))
    spec = ModelSpec("georet-base", str(tmp_path / "focus.pt"))
    expected = load_model(spec, device="cpu", image_runtime="torch").encode_images(images)
    exported = load_model(spec, device="cpu", image_runtime="openvino")
    assert (exported.encode_images(images) * expected).sum(axis=1).min() >= 0.9999
    assert torch.backends.mha.get_fastpath_enabled()  # switched off only while exporting
