"""The torch-free query encoder: same vectors and identity as the torch model, and a query that never imports torch."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from georet.errors import GeoretError
from georet.geo import SceneVocabulary, read_classes
from georet.geo.scenes import ANCHOR_TEMPERATURE, ANCHOR_WEIGHT
from georet.models import BUNDLED_WEIGHTS, ModelSpec, load_model, load_query_encoder
from georet.models.text_query import read_torch_file
from georet.search import embed_queries, open_index
from georet.search.feedback import PSEUDO_FEEDBACK_PLACES, pseudo_feedback_query

TEXTS = ["airport near river", "a creek", "", "many buildings and green trees are around a playground " * 4,
         "STORAGE TANKS next to the harbour, with ships!"]


@pytest.fixture(scope="module")
def torch_base():
    return load_model(ModelSpec("georet-base", "bundled"), device="cpu")


def test_reads_torch_files_exactly_as_torch_does(tmp_path):
    stored = torch.load(BUNDLED_WEIGHTS["georet-base"], map_location="cpu", weights_only=True)
    read = read_torch_file(BUNDLED_WEIGHTS["georet-base"])
    assert read["config"] == stored["config"] and read["backbones"] == stored["backbones"]
    assert sorted(read["state_dict"]) == sorted(stored["state_dict"])
    for key, tensor in stored["state_dict"].items():
        assert read["state_dict"][key].dtype == tensor.numpy().dtype
        np.testing.assert_array_equal(read["state_dict"][key], tensor.numpy())
    # views with offsets and strides (a transposed slice) come back as torch saved them
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    torch.save({"view": base[1:, 2:].t(), "scalar": torch.tensor(2.5, dtype=torch.float64)}, tmp_path / "v.pt")
    views = read_torch_file(tmp_path / "v.pt")
    np.testing.assert_array_equal(views["view"], base[1:, 2:].t().numpy())
    assert views["scalar"] == 2.5


def test_refuses_what_is_not_plain_tensors(tmp_path):
    class Payload:  # unpickling this would run code from the file: only containers and tensors may load
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(GeoretError, match=r"evil\.pt is not a readable torch file \(.*print is not allowed"):
        read_torch_file(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(GeoretError, match=r"junk\.pt is not a readable torch file"):
        read_torch_file(tmp_path / "junk.pt")
    with zipfile.ZipFile(tmp_path / "nopkl.pt", "w") as archive:
        archive.writestr("x/other", pickle.dumps(1))
    with pytest.raises(GeoretError, match="is not a torch zip file"):
        read_torch_file(tmp_path / "nopkl.pt")


def test_encodes_text_like_the_torch_model(torch_base):
    encoder = load_query_encoder("georet-base", "bundled")
    assert encoder is not None
    assert encoder.identity == torch_base.identity  # an index built by the torch model accepts it
    assert encoder.dim == torch_base.dim == 256
    assert encoder.logit_scale == pytest.approx(torch_base.logit_scale, rel=1e-6)
    ours, theirs = encoder.encode_text(TEXTS), torch_base.encode_text(TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 256)
    assert np.abs(ours - theirs).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    # batching and padding change nothing: each text alone gives its row
    np.testing.assert_allclose(encoder.encode_text([TEXTS[0]])[0], ours[0], atol=1e-6)


def test_only_heads_only_tower_models_have_one(tmp_path):
    assert load_query_encoder("georet-small", "bundled") is None  # an open_clip model: its text runs in torch
    assert load_query_encoder("georet-base", "bundled", checkpoint="x.pt") is None
    assert load_query_encoder("georet-base", None) is None  # random init
    assert load_query_encoder("georet-base", str(tmp_path / "missing.pt")) is None
    # weights trained for another config (here: another embedding size) fall back to the torch loader, which says why
    payload = torch.load(BUNDLED_WEIGHTS["georet-base"], map_location="cpu", weights_only=True)
    payload["config"] = {**payload["config"], "embed_dim": 128}
    torch.save(payload, tmp_path / "other.pt")
    assert load_query_encoder("georet-base", str(tmp_path / "other.pt")) is None
    payload = torch.load(BUNDLED_WEIGHTS["georet-base"], map_location="cpu", weights_only=True)
    payload["backbones"] = {**payload["backbones"], "text": "model.safetensors:0000"}
    torch.save(payload, tmp_path / "oldbackbone.pt")
    assert load_query_encoder("georet-base", str(tmp_path / "oldbackbone.pt")) is None


def test_a_text_query_on_a_georet_base_index_never_imports_torch(tmp_path, rasters, torch_base):
    from georet import TilingParams, index_raster

    db = tmp_path / "base.db"
    index_raster([rasters["utm"]], db, tiling=TilingParams(tile_size=128), model=torch_base, progress=False)
    expected = __import__("georet").open_index(db, model=torch_base).search("a river near houses", k=4)
    script = (
        "import json, sys\n"
        "from georet import open_index\n"
        f"hits = open_index({str(db)!r}).search('a river near houses', k=4)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'ids': hits.tile_id.tolist(),"
        " 'scores': hits.score.round(5).tolist()}))\n")
    out = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                    check=True).stdout)
    assert out["torch"] is False
    assert out["ids"] == expected.tile_id.tolist()
    np.testing.assert_allclose(out["scores"], expected.score.to_numpy(), atol=1e-4)


def test_short_queries_are_anchored_to_the_scene_classes_in_the_text_tower_s_own_space(tmp_path, rasters, torch_base):
    """"cropland" is a word RSICD's captions never use: through the heads it lands nearest bare land, while
    MiniLM itself puts it next to farmland. Anchored, it is nearest farmland; sentences stay as written; a
    model without a frozen text tower of its own (open_clip) has no vocabulary; a search anchors short
    queries to the model's classes, torch and numpy alike."""
    numpy_encoder = load_query_encoder("georet-base", "bundled")
    words = ["cropland", "a reservoir", TEXTS[3]]
    np.testing.assert_allclose(numpy_encoder.sentence_vectors(words), torch_base.sentence_vectors(words), atol=1e-5)
    vocabulary = SceneVocabulary.of(torch_base)
    assert vocabulary.labels == tuple(c.label for c in read_classes())
    plain, anchored = embed_queries(torch_base, words), embed_queries(torch_base, words, vocabulary)
    nearest = [vocabulary.labels[i] for i in (np.stack([plain[0], anchored[0]]) @ vocabulary.vectors.T).argmax(1)]
    assert nearest == ["bareland", "farmland"]
    closeness = torch_base.sentence_vectors(["cropland"]) @ vocabulary.words.T / ANCHOR_TEMPERATURE
    weights = np.exp(closeness - closeness.max()) / np.exp(closeness - closeness.max()).sum()
    by_hand = plain[0] + ANCHOR_WEIGHT * (weights @ vocabulary.vectors)[0]
    np.testing.assert_allclose(anchored[0], by_hand / np.linalg.norm(by_hand), atol=1e-5)
    np.testing.assert_allclose(anchored[2], plain[2], atol=1e-6)  # a sentence is not a name
    np.testing.assert_allclose(embed_queries(numpy_encoder, words, SceneVocabulary.of(numpy_encoder)), anchored,
                               atol=1e-4)
    assert SceneVocabulary.of(load_model(ModelSpec("georet-small", "bundled"), device="cpu")) is None

    from georet import TilingParams, index_raster

    db = tmp_path / "base.db"
    index_raster([rasters["utm"]], db, tiling=TilingParams(tile_size=128), model=torch_base, progress=False)
    index = open_index(db, model=torch_base)
    vectors = index.catalog().vectors
    expected = {}
    for name, vocab in (("anchored", vocabulary), ("plain", None)):
        query = embed_queries(torch_base, ["cropland"], vocab)[0]
        moved = pseudo_feedback_query(query, vectors[np.argsort(-(vectors @ query))[:PSEUDO_FEEDBACK_PLACES]])
        expected[name] = np.sort(vectors @ moved)[::-1][:5]
    assert not np.allclose(expected["anchored"], expected["plain"], atol=1e-4)
    for opened in (index, open_index(db)):  # warm torch, cold numpy
        np.testing.assert_allclose(opened.search("cropland", k=5, relational=False).score, expected["anchored"],
                                   atol=1e-4)


def test_a_legend_in_the_user_s_own_words_is_anchored_and_the_model_s_own_classes_are_not(torch_base):
    """Zero-shot classes named in words the model was not trained with ("cropland" for farmland) move towards
    the classes it knows, as short queries do; a class of the shipped vocabulary keeps its own vector."""
    from georet.geo import TILE_LABEL_TEMPLATES, SceneClass, ZeroShotScenes

    legend = [SceneClass("farmland", "cropland"), SceneClass("forest", "forest"), SceneClass("water", "open water")]
    vocabulary = SceneVocabulary.of(torch_base)
    anchored = ZeroShotScenes(torch_base, legend, TILE_LABEL_TEMPLATES, vocabulary)
    plain = ZeroShotScenes(torch_base, legend, TILE_LABEL_TEMPLATES)
    np.testing.assert_allclose(anchored.text_vectors[1], plain.text_vectors[1], atol=1e-7)  # "forest" is its own
    words = torch_base.sentence_vectors(["cropland", "open water"])
    np.testing.assert_allclose(anchored.text_vectors[[0, 2]],
                               vocabulary.anchored(plain.text_vectors[[0, 2]], words), atol=1e-6)
    farmland = vocabulary.vectors[vocabulary.labels.index("farmland")]
    assert anchored.text_vectors[0] @ farmland > plain.text_vectors[0] @ farmland + 0.05


def test_the_vocabulary_is_kept_per_model_and_a_broken_file_is_made_again(tmp_path, torch_base):
    """A cold query would encode 270 sentences to anchor a short query: the vocabulary is read from the cache
    instead, one file per model identity, written whole; an unreadable file is replaced, not trusted."""
    calls = []

    class Counting:
        identity, logit_scale = torch_base.identity, torch_base.logit_scale

        def encode_text(self, texts):
            calls.append(len(texts))
            return torch_base.encode_text(texts)

        def sentence_vectors(self, texts):
            return torch_base.sentence_vectors(texts)

    made = SceneVocabulary.of(Counting(), tmp_path)
    assert calls and [p.suffix for p in tmp_path.iterdir()] == [".npz"]
    calls.clear()
    read = SceneVocabulary.of(Counting(), tmp_path)
    assert not calls and read.labels == made.labels
    np.testing.assert_array_equal(read.vectors, made.vectors)
    np.testing.assert_array_equal(read.words, made.words)
    next(tmp_path.iterdir()).write_bytes(b"not numpy")
    again = SceneVocabulary.of(Counting(), tmp_path)
    assert calls and np.array_equal(again.vectors, made.vectors)
    assert SceneVocabulary.of(Counting(), tmp_path).labels == made.labels  # rewritten whole
