"""Your own imagery: the tile legend, unknown tiles, few-shot relabelling in the library and the CLI, and the
training sources beyond one caption file."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import invoke_cli
from PIL import Image

from georet.errors import GeoretError
from georet.geo import (
    UNKNOWN,
    FewShotScenes,
    SceneClass,
    SceneExamples,
    ZeroShotScenes,
    read_classes,
    tile_legend,
)
from georet.testing.rasters import write_raster


class AxisText:
    """A text encoder whose class prompts are unit axes: class i's prompt is axis i (for exact checks)."""

    logit_scale = 10.0

    def __init__(self, words: list[str], dim: int = 4):
        self.words, self.dim = words, dim

    def encode_text(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for n, text in enumerate(texts):
            out[n, next(i for i, w in enumerate(self.words) if w in text)] = 1.0
        return out


def axis_scenes(min_confidence: float = 0.0) -> ZeroShotScenes:
    classes = [SceneClass("forest", "forest"), SceneClass("sea", "the sea"), SceneClass("farmland", "farmland")]
    return ZeroShotScenes(AxisText(["forest", "sea", "farmland"]), classes, min_confidence=min_confidence)


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_tile_legend_adds_what_real_rasters_hold_to_aids_classes():
    legend = [c.label for c in tile_legend()]
    assert legend[:30] == [c.label for c in read_classes()]
    assert {"sea", "wetland", "cloud", "snow", "shrubland"} <= set(legend[30:])
    assert len(set(legend)) == len(legend)


def test_a_tile_that_fits_no_class_well_is_unknown():
    vectors = unit([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # a forest; a tile like no class
    assert [s.scene for s in axis_scenes().label([], vectors)] == ["forest", "forest"]  # the nearest wrong class
    labels = axis_scenes(min_confidence=0.5).label([], vectors)
    assert [s.scene for s in labels] == ["forest", UNKNOWN]
    assert labels[1].score == pytest.approx(1 / 3)  # its best probability is still reported


def test_prototypes_move_a_class_to_its_examples():
    # dark sea tiles read as forest (nearer the forest axis); two marked sea tiles pull "sea" to them
    sea_tiles = unit([[0.6, 0.3, 0.0, 0.74], [0.55, 0.3, 0.0, 0.78], [0.6, 0.25, 0.0, 0.76]])
    zero_shot = axis_scenes()
    assert {s.scene for s in zero_shot.label([], sea_tiles)} == {"forest"}
    few = FewShotScenes(zero_shot, SceneExamples(("sea", "sea"), sea_tiles[:2]))  # prototypes: the default
    assert [s.scene for s in few.label([], sea_tiles)] == ["sea"] * 3
    expected = unit(unit([0.0, 1.0, 0.0, 0.0]) + unit(sea_tiles[:2].sum(axis=0)))
    np.testing.assert_allclose(few.text_vectors[1], expected, atol=1e-6)
    np.testing.assert_allclose(few.text_vectors[[0, 2]], zero_shot.text_vectors[[0, 2]])  # no examples: unmoved
    cache = FewShotScenes(zero_shot, SceneExamples(("sea", "sea"), sea_tiles[:2]), "cache")
    assert [s.scene for s in cache.label([], sea_tiles)] == ["sea"] * 3


def test_the_probe_separates_look_alike_classes_that_prototypes_do_not():
    # sea tiles that read as forest even after "sea" moves to their mean; the probe fits the examples
    sea = unit([[0.8, 0.2, 0.0, 0.57], [0.78, 0.22, 0.0, 0.59], [0.81, 0.18, 0.0, 0.56], [0.79, 0.2, 0.0, 0.58]])
    forest = unit([[0.9, 0.0, 0.1, 0.42], [0.92, 0.0, 0.08, 0.38], [0.91, 0.02, 0.1, 0.4]])
    examples = SceneExamples(("sea", "sea", "forest", "forest"), np.concatenate([sea[:2], forest[:2]]))
    prototype = FewShotScenes(axis_scenes(), examples)
    assert {s.scene for s in prototype.label([], sea)} == {"forest"}
    probe = FewShotScenes(axis_scenes(), examples, "probe")
    assert [s.scene for s in probe.label([], sea)] == ["sea"] * 4  # two of them were not examples
    assert [s.scene for s in probe.label([], forest)] == ["forest"] * 3
    farmland = probe.text_vectors[2] / np.linalg.norm(probe.text_vectors[2])
    assert farmland @ axis_scenes().text_vectors[2] > 0.99  # a class without examples keeps its words
    with pytest.raises(GeoretError, match="one of prototype, probe, cache, got 'knn'"):
        FewShotScenes(axis_scenes(), examples, "knn")


def test_examples_must_name_a_class_of_the_legend():
    with pytest.raises(GeoretError, match="'town', a class the legend lacks"):
        FewShotScenes(axis_scenes(), SceneExamples(("town",), unit([[0.0, 0.0, 0.0, 1.0]])))
    with pytest.raises(GeoretError, match="2 example labels for 1"):
        SceneExamples(("sea", "sea"), unit([[0.0, 1.0, 0.0, 0.0]]))


def halves_raster(path):
    """A raster whose left half is bright blocky ground and right half a dark, smooth, water-like blue."""
    data = np.zeros((3, 256, 256), np.uint8)
    rng = np.random.default_rng(0)
    data[:, :, :128] = np.kron(rng.integers(120, 255, (3, 8, 4)), np.ones((32, 32)))
    data[2, :, 128:], data[1, :, 128:] = 90, 40
    return write_raster(path, "utm", (256, 256), data=data)


def test_relabel_from_marked_tiles_then_a_search_naming_the_class(tmp_path, tiny_model):
    from georet import TilingParams, index_raster, open_index

    db = tmp_path / "tiles.db"
    index_raster([halves_raster(tmp_path / "halves.tif")], db, tiling=TilingParams(tile_size=64), model=tiny_model,
                 progress=False)
    index = open_index(db, model=tiny_model)
    rows = index.store.table.to_arrow().select(["tile_id", "col_off"]).to_pylist()
    left = [r["tile_id"] for r in rows if r["col_off"] < 128]
    right = [r["tile_id"] for r in rows if r["col_off"] >= 128]
    invoke_cli("label", "--db", db, "--set", "ground", "--positive", ",".join(left[:2]), check=True)
    invoke_cli("label", "--db", db, "--set", "water", "--positive", ",".join(right[:2]), check=True)
    before = index.store.manifest["sources"]
    counts = json.loads(invoke_cli("relabel", "--db", db, "ground", "water", "--json", check=True).stdout)
    assert counts == {"ground": len(left), "water": len(right)}  # two new classes, every tile one of them
    table = open_index(db).store.table.to_arrow()
    scenes = dict(zip(table["tile_id"].to_pylist(), table["scene"].to_pylist()))
    assert {scenes[t] for t in left} == {"ground"} and {scenes[t] for t in right} == {"water"}
    entry = next(iter(open_index(db).store.manifest["sources"].values()))
    assert entry["scenes"] == "few-shot" and entry["scene_examples"]["examples"] == {"ground": 2, "water": 2}
    assert entry["classes"] == next(iter(before.values()))["classes"]  # the legend is kept; examples add to it
    # a short query naming a class with examples is steered by them (as by --like): the hits are the other water
    hits = open_index(db, model=tiny_model).search("the water", k=len(right) - 2)
    assert set(hits.tile_id) == set(right[2:])
    assert "scene" in invoke_cli("relabel", "--db", db, "water", check=True).stdout
    probed = json.loads(invoke_cli("relabel", "--db", db, "ground", "water", "--method", "probe", "--json",
                                   check=True).stdout)
    assert probed == {"ground": len(left), "water": len(right)}
    assert next(iter(open_index(db).store.manifest["sources"].values()))["scene_examples"]["method"] == "probe"


def test_relabel_refuses_an_empty_or_unknown_set(built_index):
    empty = invoke_cli("relabel", "--db", built_index, "nosuchset")
    assert empty.returncode == 1 and "no label set 'nosuchset'" in empty.stderr
    assert "Traceback" not in empty.stderr


def test_training_sources_split_by_place(tmp_path):
    from georet.training.sources import SourceSpec, read_source

    folders = tmp_path / "scenes"
    for cls in ("chaparral", "harbor"):
        (folders / cls).mkdir(parents=True)
        for n in range(3):
            Image.fromarray(np.full((32, 32, 3), 40 * n, np.uint8)).save(folders / cls / f"{cls}_{n}.jpg")
    (folders / "manifest.csv").write_text("file,group\n" + "".join(
        f"{c}/{c}_{n}.jpg,{c}_g{min(n, 1)}\n" for c in ("chaparral", "harbor") for n in range(3)))
    spec = SourceSpec("scene_folders", str(folders), hold_out=("chaparral_g1",))
    train, held = read_source(spec, tmp_path / "work"), read_source(spec, tmp_path / "work", "held_out")
    assert [p.name for p in held.images] == ["chaparral_1.jpg", "chaparral_2.jpg"]  # both files of the group
    assert len(train) == 4 and train.captions[0] == "an aerial image of shrubland."
    assert len(train.captions) == 5 * len(train)

    masks = tmp_path / "masks_set"
    (masks / "images").mkdir(parents=True)
    (masks / "masks").mkdir()
    mask = np.full((600, 300), 2, np.uint8)  # bare land, with water over most of the lower crop
    mask[400:, :] = 5
    Image.fromarray(np.zeros((600, 300, 3), np.uint8)).save(masks / "images" / "tile1_part001.jpg")
    Image.fromarray(mask).save(masks / "masks" / "tile1_part001.png")
    crops = read_source(SourceSpec("landcover_masks", str(masks)), tmp_path / "work")
    assert sorted(set(crops.captions))[:2] == ["a remote sensing image showing bare land.",
                                               "a remote sensing image showing water and bare land."]

    write_raster(tmp_path / "r.tif", "utm", (300, 150), seed=3)
    table = tmp_path / "labels.csv"
    with table.open("w", newline="") as f:
        csv.writer(f).writerows([["raster", "col_off", "row_off", "label", "also"], ["r.tif", 0, 0, "sea", ""],
                                 ["r.tif", 150, 0, "wetland", "farmland"]])
    tiles = read_source(SourceSpec("labelled_tiles", str(table), root=str(tmp_path)), tmp_path / "work")
    assert "an aerial image of a marsh and farmland." in tiles.captions[5:]  # the second tile's, wordings rotated
    assert np.asarray(Image.open(tiles.images[0])).shape == (150, 150, 3)
    assert len(read_source(SourceSpec("labelled_tiles", str(table), root=str(tmp_path), hold_out=("r.tif",)),
                           tmp_path / "work")) == 0
    one = read_source(SourceSpec("labelled_tiles", str(table), root=str(tmp_path), captions=1), tmp_path / "work")
    assert one.captions == ["an aerial image of the sea.", "a satellite view of a marsh and farmland."]
    with pytest.raises(GeoretError, match="captions: must be 1 to 5"):
        read_source(SourceSpec("labelled_tiles", str(table), root=str(tmp_path), captions=0), tmp_path / "work")


def test_feature_caches_are_kept_per_source(tmp_path):
    from georet.training.data import RetrievalSplit
    from georet.training.feature_cache import FeatureCache
    from georet.training.pairs import PairTable

    def split(names):
        paths = [tmp_path / n for n in names]
        return RetrievalSplit(paths, [f"{n} caption" for n in names], np.arange(len(names)))

    table = PairTable.build(split(["a", "b"]), split(["c"]), [split(["d"]), split(["e", "f"])])
    assert table.parts == (3, 1, 2) and [len(p) for p in table.part_paths()] == [3, 1, 2]
    assert [p.name for p in table.train.images] == ["a", "b", "d", "e", "f"]
    assert table.rows(table.train).image.tolist() == [0, 1, 3, 4, 5]
    caches = [FeatureCache([], np.full((2, n, 4), k, np.float16), None, 1) for k, n in enumerate(table.parts)]
    joined = FeatureCache.concat(caches)
    assert joined.pooled.shape == (2, 6, 4) and joined.pooled[0, :, 0].tolist() == [0, 0, 0, 1, 2, 2]


def test_a_batch_of_odd_sizes_is_brought_to_its_most_common_size():
    from georet.training.data import same_size

    batch = [np.zeros((256, 256, 3), np.uint8), np.full((247, 256, 3), 200, np.uint8), np.zeros((256, 256, 3), np.uint8)]
    resized = same_size(batch)
    assert [p.shape for p in resized] == [(256, 256, 3)] * 3
    assert resized[0] is batch[0] and int(resized[1].mean()) == 200  # the odd one resized, not cropped or blanked
