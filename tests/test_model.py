"""Model factory: tiny architecture, identity, preprocessing, offline behaviour, checkpoints."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from georet.errors import GeoretError
from georet.models import CHECKPOINT_FORMAT, ModelSpec, Preprocess, load_model


def test_tiny_model_is_small_and_unit_normalised(tiny_model):
    assert sum(p.numel() for p in tiny_model.model.parameters()) <= 2_000_000
    text = tiny_model.encode_text(["an airport", "a river"])
    pixels = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    images = tiny_model.encode_images(tiny_model.preprocess.apply(pixels))
    assert text.shape == (2, tiny_model.dim) and images.shape == (3, tiny_model.dim)
    assert np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)


def test_random_init_is_reproducible(tiny_model):
    again = load_model(ModelSpec("georet-tiny", None), device="cpu")
    assert again.identity == tiny_model.identity
    assert np.allclose(again.encode_text(["harbour"]), tiny_model.encode_text(["harbour"]))


def test_preprocess_resizes_and_normalises():
    prep = Preprocess(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    white = np.full((2, 100, 100, 3), 255, np.uint8)
    out = prep.apply(white)
    assert out.shape == (2, 3, 32, 32)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-4)  # (1 - 0.5) / 0.5
    wide = prep.apply(np.zeros((1, 50, 100, 3), np.uint8))  # shortest side then centre crop
    assert wide.shape == (1, 3, 32, 32)


def test_weights_file_round_trip_and_identity(tmp_path, tiny_model):
    weights = tmp_path / "tiny.pt"
    state = {k: v.clone() for k, v in tiny_model.model.state_dict().items()}
    state["text_projection"] = torch.randn_like(state["text_projection"])
    torch.save(state, weights)
    loaded = load_model(ModelSpec("georet-tiny", str(weights)), device="cpu")
    assert loaded.identity["weights_id"] != tiny_model.identity["weights_id"]
    assert loaded.identity["pretrained"] == "tiny.pt"
    assert not np.allclose(loaded.encode_text(["x"]), tiny_model.encode_text(["x"]))


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "other.pt"
    torch.save({"visual.conv1.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(GeoretError, match="does not fit georet-tiny"):
        load_model(ModelSpec("georet-tiny", str(bad)), device="cpu")
    with pytest.raises(GeoretError, match="not found"):
        load_model(ModelSpec("georet-tiny", str(tmp_path / "missing.pt")), device="cpu")


def test_pretrained_tag_without_network_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setattr("georet.models.factory.reachable", lambda url: False)
    started = time.perf_counter()
    with pytest.raises(GeoretError, match="--pretrained /path/to/weights"):
        load_model(ModelSpec("ViT-B-32", "openai"), device="cpu", cache_dir=str(tmp_path / "cache"))
    assert time.perf_counter() - started < 10


def test_unknown_tag_and_arch():
    with pytest.raises(GeoretError, match="unknown pretrained tag"):
        load_model(ModelSpec("ViT-B-32", "no-such-tag"), device="cpu")
    with pytest.raises(GeoretError, match="unknown model architecture"):
        load_model(ModelSpec("ViT-Nope", None), device="cpu")


def test_checkpoint_changes_identity_and_output(tmp_path, tiny_model):
    ckpt = tmp_path / "adapted.pt"
    proj = tiny_model.model.state_dict()["text_projection"]
    torch.save({"format": CHECKPOINT_FORMAT, "arch": "georet-tiny", "method": "full",
                "state_dict": {"clip.text_projection": proj * -1}}, ckpt)
    adapted = load_model(ModelSpec("georet-tiny", None, str(ckpt)), device="cpu")
    assert adapted.identity["checkpoint_id"] and adapted.identity["checkpoint_id"] != tiny_model.identity["checkpoint_id"]
    assert np.allclose(adapted.encode_text(["x"]), -tiny_model.encode_text(["x"]), atol=1e-5)

    torch.save({"format": CHECKPOINT_FORMAT, "arch": "ViT-B-32", "method": "full", "state_dict": {}},
               tmp_path / "other_arch.pt")
    with pytest.raises(GeoretError, match="trained on ViT-B-32"):
        load_model(ModelSpec("georet-tiny", None, str(tmp_path / "other_arch.pt")), device="cpu")


def test_explicit_missing_device_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(GeoretError, match="no CUDA"):
        load_model(ModelSpec("georet-tiny", None), device="cuda")


def test_default_model_is_bundled_and_offline(monkeypatch):
    from georet.models import BUNDLED_WEIGHTS, DEFAULT_ARCH, file_sha256

    monkeypatch.setattr("georet.models.factory.reachable", lambda url: pytest.fail("went to the network"))
    model = load_model(device="cpu")
    identity = model.identity
    assert identity["arch"] == DEFAULT_ARCH == "georet-base" and identity["pretrained"] == "bundled"
    assert identity["weights_id"] == file_sha256(BUNDLED_WEIGHTS["georet-base"])
    shipped = torch.load(BUNDLED_WEIGHTS["georet-base"], map_location="cpu", weights_only=True)["state_dict"]
    assert {key.split(".")[0] for key in shipped} == {"image_head", "text_head", "logit_scale"}  # no backbone
    # trained, not random: each scene word is nearest to the one description of it among six (chance: 1/720)
    words = model.encode_text(["airport", "forest", "beach", "river", "farmland", "stadium"])
    descriptions = model.encode_text(["many planes parked near a runway", "dense green trees",
                                      "waves breaking on a sandy shore", "a river winding through the land",
                                      "fields of crops in rows", "a sports field surrounded by seats"])
    assert list((words @ descriptions.T).argmax(axis=1)) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(GeoretError, match="name the weights for georet-tiny"):
        ModelSpec("georet-tiny", "bundled")


@pytest.mark.parametrize("arch", ["georet-base", "georet-small"])
def test_bundled_model_reproduces_its_reference_embeddings(arch):
    """Fixed texts and real demo chips → the vectors recorded by tests/data/make_reference_embeddings.py."""
    import json
    from pathlib import Path

    from make_reference_embeddings import OUT, embed

    reference = json.loads(Path(OUT).read_text())[arch]
    model = load_model(ModelSpec(arch, "bundled"), device="cpu", image_runtime="openvino")  # float32, as torch
    assert model.identity == reference["identity"]  # indexes built before still open
    current = embed(model)
    for kind in ("text", "image"):
        assert np.abs(np.array(current[kind]) - np.array(reference[kind])).max() < 1e-4, kind


def test_a_named_architecture_must_name_its_weights():
    with pytest.raises(GeoretError, match=r"name the weights for ViT-B-32: --pretrained TAG\|FILE \(tags: remoteclip, "
                                          r"georsclip, georsclip-ret2, skyclip, farslip, farslip-s1, openai, "):
        ModelSpec("ViT-B-32")
    with pytest.raises(GeoretError, match="name the weights for ViT-B-32"):
        ModelSpec.from_options("ViT-B-32")
    assert ModelSpec.from_options() == ModelSpec("georet-base", "bundled")
    assert ModelSpec.from_options(pretrained="none") == ModelSpec("georet-base", None)
    assert ModelSpec.from_options("georet-small", "bundled") == ModelSpec("georet-small", "bundled")
    assert ModelSpec.from_options("georet-tiny") == ModelSpec("georet-tiny", None)  # no tags: random init
    assert ModelSpec.from_options("ViT-B-32", "openai", "c.pt") == ModelSpec("ViT-B-32", "openai", "c.pt")


@pytest.mark.slow
def test_onnx_image_side_gives_torchs_embeddings_and_is_exported_once(tmp_path, monkeypatch):
    """The bundled model's image side exported to ONNX: OpenVINO (float32) and ONNX Runtime embed the reference
    chips as torch does (cosine >= 0.9999); the file is named by the weights and made once."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "data"))
    from make_reference_embeddings import reference_inputs

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _, pixels = reference_inputs()
    torch_model = load_model(ModelSpec("georet-base", "bundled"), device="cpu", image_runtime="torch")
    assert torch_model.onnx_image is None
    expected = torch_model.encode_images(torch_model.preprocess.apply(pixels))
    exported = []
    for runtime in ("openvino", "onnxruntime"):
        model = load_model(ModelSpec("georet-base", "bundled"), device="cpu", image_runtime=runtime)
        vectors = model.encode_images(model.preprocess.apply(pixels))
        assert (vectors * expected).sum(axis=1).min() >= 0.9999, runtime
        assert model.identity == torch_model.identity  # indexes mix runtimes freely
        exported.append((model.onnx_image.path, model.onnx_image.path.stat().st_mtime_ns))
    assert exported[0] == exported[1] and list((tmp_path / "georet" / "onnx").glob("*.onnx")) == [exported[0][0]]
    untrained = load_model(ModelSpec("georet-base", None), device="cpu", image_runtime="openvino")
    assert untrained.onnx_image.path != exported[0][0]  # other weights (random heads), another file
    assert load_model(ModelSpec("georet-tiny", None), device="cpu").onnx_image is None  # open_clip models: torch
    with pytest.raises(GeoretError, match="image_runtime: must be one of auto, openvino, openvino-bf16, onnxruntime, torch"):
        load_model(ModelSpec("georet-base", "bundled"), device="cpu", image_runtime="tpu")


@pytest.mark.slow
def test_index_takes_the_image_runtime(tmp_path, rasters):
    """`georet index --image-runtime openvino` embeds in float32, torch's own vectors; the default takes the
    fastest engine (bfloat16 where the CPU has it): the same tiles and identity, vectors within its rounding."""
    from conftest import run_cli

    from georet.index import TileStore
    from georet.models.onnx_image import cpu_has_bfloat16

    vectors = {}
    for runtime in ("auto", "openvino"):
        db = tmp_path / f"{runtime}.db"
        run_cli("index", rasters["utm"], "--db", db, "--tile-size", "128", "--image-runtime", runtime, "-q", check=True)
        table = TileStore.open(db).table.to_arrow().sort_by("tile_id")
        vectors[runtime] = np.array(table["vector"].to_pylist())
    assert vectors["auto"].shape == vectors["openvino"].shape == (4, 256)
    cosines = (vectors["auto"] * vectors["openvino"]).sum(1)
    assert cosines.min() >= 0.995
    assert (cosines.min() < 1 - 1e-6) == cpu_has_bfloat16()  # the default rounds to bfloat16 only where it pays
    bad = run_cli("index", rasters["utm"], "--db", tmp_path / "x.db", "--image-runtime", "tpu")
    assert bad.returncode == 1 and bad.stderr.strip() == (
        "Error: --image-runtime: must be one of auto, openvino, openvino-bf16, onnxruntime, torch; got 'tpu'")


def test_the_default_engine_is_the_fastest_installed(monkeypatch):
    """`auto`: ONNX Runtime where it has a CUDA GPU, else OpenVINO in bfloat16 where the CPU has it, else float32."""
    import georet.models.onnx_image as onnx_image

    monkeypatch.setattr(onnx_image, "cpu_has_bfloat16", lambda: True)
    assert onnx_image.resolve_engine("auto") == "openvino-bf16"
    monkeypatch.setattr(onnx_image, "cpu_has_bfloat16", lambda: False)
    assert onnx_image.resolve_engine("auto") == "openvino"
    assert onnx_image.resolve_engine("onnxruntime") == "onnxruntime"
    monkeypatch.setattr(onnx_image, "ort_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_image.resolve_engine("auto") == "onnxruntime"
