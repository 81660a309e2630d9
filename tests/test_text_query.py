"""The torch-free query encoder: same vectors and identity as the torch model, and a query that never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from georet.geo import SceneVocabulary, read_classes
from georet.models import BUNDLED_WEIGHTS, ModelSpec, load_model, load_query_encoder
from georet.models.shipped import LIGHT_DIR
from georet.models.text_query import QueryTextEncoder
from georet.search import embed_queries, open_index
from georet.search.feedback import pseudo_feedback_query

TEXTS = ["airport near river", "a creek", "", "many buildings and green trees are around a playground " * 4,
         "STORAGE TANKS next to the harbour, with ships!"]


@pytest.fixture(scope="module")
def torch_base():
    return load_model(ModelSpec("georet-base", "bundled"), device="cpu")


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_the_shipped_text_graph_encodes_like_the_torch_model(torch_base, engine):
    """One run gives the embeddings and MiniLM's own vectors; both match torch's to cosine 0.9999 (the graph's
    weights are float16), in a batch of mixed lengths or one text at a time, on either runtime."""
    encoder = QueryTextEncoder(LIGHT_DIR / "text.onnx", "bundled", engine)
    assert encoder.identity == torch_base.identity  # an index built by the torch model accepts it
    assert encoder.dim == torch_base.dim == 256
    assert encoder.logit_scale == pytest.approx(torch_base.logit_scale, rel=1e-6)
    ours, words = encoder.text_and_sentence_vectors(TEXTS)
    theirs, their_words = torch_base.text_and_sentence_vectors(TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 256) and words.shape == (len(TEXTS), 384)
    assert (ours * theirs).sum(1).min() > 0.9999 and (words * their_words).sum(1).min() > 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(encoder.encode_text([TEXTS[0]])[0], ours[0], atol=1e-6)  # padding changes nothing
    np.testing.assert_allclose(encoder.sentence_vectors(TEXTS), words, atol=1e-6)
    # the torch model's own pass gives both as its two methods do
    np.testing.assert_allclose(their_words, torch_base.sentence_vectors(TEXTS), atol=1e-6)
    np.testing.assert_allclose(theirs, torch_base.encode_text(TEXTS), atol=1e-6)


def test_the_tokenizer_gives_the_torch_tower_s_ids(torch_base):
    tokenizer = load_query_encoder("georet-base", "bundled").tokenizer
    np.testing.assert_array_equal(tokenizer.ids(TEXTS), torch_base.tokenizer(TEXTS).numpy())  # one is truncated
    short = [TEXTS[0], TEXTS[1], TEXTS[4]]
    ours, theirs = tokenizer.ids(short), torch_base.tokenizer(short).numpy()
    assert ours.shape == (3, 12)  # padded to the longest text, not to the context length
    np.testing.assert_array_equal(theirs[:, :12], ours)
    assert not theirs[:, 12:].any()


def test_other_weights_get_their_graph_in_the_cache_the_first_time_torch_loads_them(tmp_path, monkeypatch,
                                                                                    torch_base):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert load_query_encoder("georet-small", "bundled") is None  # an open_clip model: its text runs in torch
    assert load_query_encoder("georet-base", "bundled", checkpoint="x.pt") is None
    assert load_query_encoder("georet-base", None) is None  # random init
    assert load_query_encoder("georet-base", str(tmp_path / "missing.pt")) is None
    # a user's own heads (here: the bundled ones, nudged): no graph until torch has loaded them once
    payload = torch.load(BUNDLED_WEIGHTS["georet-base"], map_location="cpu", weights_only=True)
    state = payload["state_dict"]
    for key in [k for k in state if k.startswith("text_head") and k.endswith("weight")]:
        state[key] = state[key] * 1.5 + 0.01
    torch.save(payload, tmp_path / "mine.pt")
    assert load_query_encoder("georet-base", str(tmp_path / "mine.pt")) is None
    mine = load_model(ModelSpec("georet-base", str(tmp_path / "mine.pt")), device="cpu")
    graph = mine.export_text_graph()
    assert graph.parent == tmp_path / "cache" / "georet" / "onnx"
    encoder = load_query_encoder("georet-base", str(tmp_path / "mine.pt"))
    assert encoder.identity == mine.identity != torch_base.identity
    assert (encoder.encode_text(TEXTS) * mine.encode_text(TEXTS)).sum(1).min() > 0.99999  # float32 weights
    assert torch_base.export_text_graph() is not None  # bundled too, where the package's graph is missing
    assert load_model(ModelSpec("georet-small", "bundled"), device="cpu").export_text_graph() is None


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
    # the shipped graph's weights are float16: scores agree to a few 1e-4, the ranking exactly
    np.testing.assert_allclose(out["scores"], expected.score.to_numpy(), atol=5e-4)


def test_short_queries_are_anchored_to_the_scene_classes_in_the_text_tower_s_own_space(tmp_path, rasters, torch_base):
    """"cropland" is a word RSICD's captions never use: through the heads it lands nearest bare land, while
    MiniLM itself puts it next to farmland. Anchored, it is nearest farmland; sentences stay as written; a
    model without a frozen text tower of its own (open_clip) has no vocabulary; a search anchors short
    queries to the model's classes, torch and numpy alike."""
    graph_encoder = load_query_encoder("georet-base", "bundled")
    words = ["cropland", "a reservoir", TEXTS[3]]
    np.testing.assert_allclose(graph_encoder.sentence_vectors(words), torch_base.sentence_vectors(words), atol=3e-4)
    vocabulary = SceneVocabulary.of(torch_base)
    assert vocabulary.labels == tuple(c.label for c in read_classes())
    plain, anchored = embed_queries(torch_base, words), embed_queries(torch_base, words, vocabulary)
    nearest = [vocabulary.labels[i] for i in (np.stack([plain[0], anchored[0]]) @ vocabulary.vectors.T).argmax(1)]
    assert nearest == ["bareland", "farmland"]
    closeness = torch_base.sentence_vectors(["cropland"]) @ vocabulary.words.T / 0.05  # documented temperature
    weights = np.exp(closeness - closeness.max()) / np.exp(closeness - closeness.max()).sum()
    by_hand = plain[0] + 0.5 * (weights @ vocabulary.vectors)[0]  # and weight
    np.testing.assert_allclose(anchored[0], by_hand / np.linalg.norm(by_hand), atol=1e-5)
    np.testing.assert_allclose(anchored[2], plain[2], atol=1e-6)  # a sentence is not a name
    np.testing.assert_allclose(embed_queries(graph_encoder, words, SceneVocabulary.of(graph_encoder)), anchored,
                               atol=5e-4)
    assert SceneVocabulary.of(load_model(ModelSpec("georet-small", "bundled"), device="cpu")) is None

    from georet import TilingParams, index_raster

    db = tmp_path / "base.db"
    index_raster([rasters["utm"]], db, tiling=TilingParams(tile_size=128), model=torch_base, progress=False)
    index = open_index(db, model=torch_base)
    vectors = index.catalog().vectors
    expected = {}
    for name, vocab in (("anchored", vocabulary), ("plain", None)):
        query = embed_queries(torch_base, ["cropland"], vocab)[0]
        moved = pseudo_feedback_query(query, vectors[np.argsort(-(vectors @ query))[:10]])
        expected[name] = np.sort(vectors @ moved)[::-1][:5]
    assert not np.allclose(expected["anchored"], expected["plain"], atol=1e-4)
    for opened in (index, open_index(db)):  # warm torch, cold graph
        np.testing.assert_allclose(opened.search("cropland", k=5, relational=False).score, expected["anchored"],
                                   atol=5e-4)


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
