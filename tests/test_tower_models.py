"""georet-base's towers: pretrained weights converted faithfully, side branches, weights files, identity."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from georet.errors import GeoretError
from georet.models import ModelSpec, file_sha256, load_model
from georet.models.efficientnet_lite import LITE_VARIANTS, EfficientNetLiteTower
from georet.models.minilm import MiniLMTower
from georet.models.tower_clip import (SideBranch, SideConfig, TowerCLIP, TowerCLIPConfig, load_tower_weights,
                                      save_tower_weights)


@pytest.fixture(scope="module")
def lit_model() -> TowerCLIP:
    model = TowerCLIP(TowerCLIPConfig(method="lit"))
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
        kept, valid, weights = focus.image_side._focus(z, torch.ones(z.shape[:2], dtype=torch.bool))
    assert tokens == 125
    assert kept.shape[1] == math.ceil(0.5 * tokens) and bool(valid.all())
    saliency = torch.sigmoid(focus.image_side.score(z).squeeze(-1))
    assert torch.allclose(weights.sort(1, descending=True).values, saliency.topk(kept.shape[1], 1).values)


def test_only_the_methods_parameters_train():
    for method, trains_text_tower in (("focus", False), ("lit", False), ("mrs", True)):
        model = TowerCLIP(TowerCLIPConfig(method=method))
        trained = {n for n, _ in model.named_parameters() if model.is_trainable(n)}
        assert not any(n.startswith("visual.") for n in trained)
        assert any(n.startswith("text.") for n in trained) == trains_text_tower
        assert "image_head.weight" in trained and "logit_scale" in trained
    full = TowerCLIP(TowerCLIPConfig(method="full"))
    assert all(full.is_trainable(n) for n, _ in full.named_parameters())


def test_config_is_strict():
    with pytest.raises(GeoretError, match="unknown model config key.*image_twoer"):
        TowerCLIPConfig.from_dict({"image_twoer": "efficientnet-lite0"})
    with pytest.raises(GeoretError, match="unknown image_side key.*keep"):
        TowerCLIPConfig.from_dict({"image_side": {"keep": 0.5}})
    with pytest.raises(GeoretError, match="unknown image tower 'efficientnet-lite9'"):
        TowerCLIPConfig.from_dict({"image_tower": "efficientnet-lite9"})


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
    with pytest.raises(GeoretError, match="--checkpoint applies to open_clip models"):
        load_model(dataclasses.replace(ModelSpec("georet-base", None), checkpoint=str(tmp_path / "c.pt")))
