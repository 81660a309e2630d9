"""The remote-sensing CLIP zoo, offline: files written in each project's checkpoint layout from a
randomly initialised open_clip model must load bit-exactly, strictly, and under their zoo name;
downloads are served by a Hugging Face-style file server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from georet.errors import GeoretError
from georet.models import ModelSpec, file_sha256, load_model, zoo

#: real subprocesses, servers, browsers, QGIS, Ray or virtualenvs: outside the fast tier (-m 'not slow')
pytestmark = pytest.mark.slow

ARCH = "ViT-B-32"


@pytest.fixture(scope="module")
def random_weights() -> dict[str, torch.Tensor]:
    """A ViT-B-32 state dict from another seed than georet's random init, so a skipped load shows."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(1234)
    return {k: v.clone() for k, v in open_clip.create_model(ARCH).state_dict().items()}


def _write_layout(layout: str, folder: Path, state: dict[str, torch.Tensor]) -> Path:
    """One file as each project publishes it."""
    if layout == "remoteclip":  # README: model.load_state_dict(torch.load(file)) -> a plain state dict
        path = folder / "RemoteCLIP-ViT-B-32.pt"
        torch.save(state, path)
    elif layout == "georsclip":  # convert_weight.py: torch.save(model.state_dict(), "RS5M_ViT-B-32.pt")
        path = folder / "RS5M_ViT-B-32.pt"
        torch.save(state, path)
    elif layout == "farslip":  # its loader also takes a nested 'state_dict'
        path = folder / "FarSLIP2_ViT-B-32.pt"
        torch.save({"state_dict": state}, path)
    elif layout == "skyclip":  # an open_clip DDP training checkpoint inside a zip archive
        inner = folder / "epoch_20.pt"
        torch.save({"epoch": 20, "name": "SkyCLIP_ViT_B32_top50pct",
                    "state_dict": {f"module.{k}": v for k, v in state.items()},
                    "optimizer": {"state": {}, "param_groups": [{"lr": 1e-9, "params": [0]}]}}, inner)
        path = folder / "SkyCLIP_ViT_B32_top50pct.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.write(inner, "SkyCLIP_ViT_B32_top50pct/epoch_20.pt")
        inner.unlink()
    else:
        raise ValueError(layout)
    return path


@pytest.mark.parametrize("layout,family,quick_gelu", [("remoteclip", "remoteclip", False),
                                                      ("georsclip", "georsclip", True),
                                                      ("farslip", "farslip", True),
                                                      ("skyclip", "skyclip", False)])
def test_each_layout_loads_bit_exactly_under_its_zoo_name(tmp_path, random_weights, layout, family, quick_gelu):
    path = _write_layout(layout, tmp_path, random_weights)
    spec = ModelSpec.from_options(None, str(path))  # the file's published name says which architecture
    assert spec.arch == ARCH
    model = load_model(spec, device="cpu")
    loaded = model.model.state_dict()
    assert set(loaded) == set(random_weights)
    assert all(torch.equal(loaded[k], random_weights[k]) for k in random_weights)
    identity = model.identity
    assert (identity["pretrained"], identity["zoo"], identity["weights_id"]) == (family, family, file_sha256(path))
    activation = type(model.model.visual.transformer.resblocks[0].mlp.gelu).__name__
    assert activation == ("QuickGELU" if quick_gelu else "GELU")  # as the project's own loading code builds it


def test_a_file_missing_or_renaming_one_key_is_refused(tmp_path, random_weights):
    dropped = dict(random_weights)
    del dropped["visual.proj"]
    torch.save(dropped, tmp_path / "RemoteCLIP-ViT-B-32.pt")
    with pytest.raises(GeoretError, match=r"does not fit ViT-B-32: 1 missing key \(visual\.proj\); nothing"):
        load_model(ModelSpec(ARCH, str(tmp_path / "RemoteCLIP-ViT-B-32.pt")), device="cpu")
    renamed = dict(random_weights)
    renamed["text_projection_old"] = renamed.pop("text_projection")
    torch.save(renamed, tmp_path / "RS5M_ViT-B-32.pt")
    with pytest.raises(GeoretError, match=r"1 missing key \(text_projection\); 1 unexpected key "
                                          r"\(text_projection_old\)"):
        load_model(ModelSpec(ARCH, str(tmp_path / "RS5M_ViT-B-32.pt")), device="cpu")
    with pytest.raises(GeoretError, match="holds remoteclip ViT-B-32 weights, not ViT-B-16: pass --model ViT-B-32"):
        torch.save(random_weights, tmp_path / "RemoteCLIP-ViT-B-32.pt")
        load_model(ModelSpec("ViT-B-16", str(tmp_path / "RemoteCLIP-ViT-B-32.pt")), device="cpu")


def test_a_renamed_file_is_recognised_by_its_shapes(tmp_path, random_weights):
    torch.save(random_weights, tmp_path / "my-model.pt")
    spec = ModelSpec.from_options(None, str(tmp_path / "my-model.pt"))
    assert spec.arch == ARCH
    model = load_model(spec, device="cpu")
    assert "zoo" not in model.identity and model.identity["pretrained"] == "my-model.pt"
    assert torch.equal(model.model.state_dict()["visual.proj"], random_weights["visual.proj"])


def test_unknown_names_are_refused_listing_the_known_ones():
    with pytest.raises(GeoretError, match=r"unknown pretrained tag 'remote-clip' for ViT-B-32 \(known tags: "
                                          r"remoteclip, georsclip, georsclip-ret2, skyclip, farslip, farslip-s1, "):
        load_model(ModelSpec(ARCH, "remote-clip"), device="cpu")
    with pytest.raises(GeoretError, match="remoteclip has no ViT-B-16 weights; it exists for RN50, ViT-B-32, "
                                          "ViT-L-14"):
        load_model(ModelSpec("ViT-B-16", "remoteclip"), device="cpu")
    with pytest.raises(GeoretError, match="remoteclip exists for RN50, ViT-B-32, ViT-L-14: name one with arch"):
        ModelSpec.from_options(None, "remoteclip")
    assert ModelSpec.from_options(None, "georsclip-ret2") == ModelSpec(ARCH, "georsclip-ret2")


def test_registry_is_strict_and_names_real_architectures():
    import open_clip

    assert {e.arch for e in zoo.zoo_entries()} <= set(open_clip.list_models())
    raw = json.loads(zoo.ZOO_FILE.read_text())
    raw["families"]["remoteclip"]["files"]["RN50"]["sha265"] = "typo"
    with pytest.raises(ValueError, match=r"zoo remoteclip/RN50: unknown keys \['sha265'\]"):
        zoo._parse_registry(raw)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_cli_fails_in_seconds_with_where_to_get_the_file(tmp_path, rasters):
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "HF_HUB_CACHE": str(tmp_path / "hub")}
    started = time.perf_counter()
    proc = run_cli("index", rasters["utm"], "--db", tmp_path / "db", "--model", ARCH, "--pretrained", "remoteclip",
                   "--device", "cpu", env=env, timeout=60)
    assert time.perf_counter() - started < 20
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("Error: remoteclip ViT-B-32 weights are not cached and 127.0.0.1 cannot be "
                                  "reached; download http://127.0.0.1:")
    assert "--model ViT-B-32 --pretrained /path/to/RemoteCLIP-ViT-B-32.pt" in proc.stderr
    assert not (tmp_path / "db").exists()


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` like the Hugging Face hub's ``/{repo}/resolve/{rev}/{file}`` (and plain URLs)."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        data = self.files.get(self.path.split("?")[0])
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", "0" * 40)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    _HubHandler.files, _HubHandler.requests = {}, []
    yield endpoint, _HubHandler
    server.shutdown()


def test_download_once_then_load_from_the_cache(tmp_path, hub, random_weights):
    endpoint, handler = hub
    published = _write_layout("georsclip", tmp_path, random_weights).read_bytes()
    handler.files["/Zilun/GeoRSCLIP/resolve/main/ckpt/RS5M_ViT-B-32.pt"] = published
    cache = str(tmp_path / "hub")
    model = load_model(ModelSpec(ARCH, "georsclip"), device="cpu", cache_dir=cache)
    assert torch.equal(model.model.state_dict()["visual.proj"], random_weights["visual.proj"])
    assert model.identity["weights_id"] == hashlib.sha256(published).hexdigest()
    assert any(r.startswith("GET ") for r in handler.requests)
    handler.files.clear(), handler.requests.clear()  # the hub is gone: the cached file must do
    again = load_model(ModelSpec(ARCH, "georsclip"), device="cpu", cache_dir=cache)
    assert again.identity == model.identity and handler.requests == []
    listing = run_cli("models", "--json", env={"HF_HUB_CACHE": cache, "HF_ENDPOINT": endpoint}, check=True)
    entries = {(e["family"], e["arch"]): e for e in json.loads(listing.stdout)["zoo"]}
    assert Path(entries["georsclip", ARCH]["cached"]).read_bytes() == published
    assert entries["georsclip-ret2", ARCH]["cached"] is None
    assert entries["georsclip-ret2", ARCH]["reported"]["rsitmd_mR"] == 51.81


def test_archive_url_download_and_checksum(tmp_path, hub, random_weights):
    endpoint, handler = hub
    archive = _write_layout("skyclip", tmp_path, random_weights)
    handler.files["/SkyCLIP_ViT_B32_top50pct.zip"] = archive.read_bytes()
    entry = dataclasses.replace(zoo.lookup("skyclip", ARCH), url=f"{endpoint}/SkyCLIP_ViT_B32_top50pct.zip")
    path = zoo.fetch(entry, cache_dir=str(tmp_path / "cache"), progress=False)
    assert path.read_bytes() == archive.read_bytes()
    state = zoo.read_state_dict(path, trusted=True)
    assert all(torch.equal(state[k], random_weights[k]) for k in random_weights)
    wrong = dataclasses.replace(entry, sha256="0" * 64)
    with pytest.raises(GeoretError, match="is not the published skyclip ViT-B-32 file"):
        zoo.fetch(wrong, cache_dir=str(tmp_path / "cache"))
    offline = dataclasses.replace(entry, url=f"http://127.0.0.1:{_closed_port()}/SkyCLIP_ViT_B32_top50pct.zip")
    with pytest.raises(GeoretError, match="skyclip ViT-B-32 weights are not cached"):
        zoo.fetch(offline, cache_dir=str(tmp_path / "empty"))


def test_cmer_recipes_start_from_zoo_weights():
    from georet.training.config import load_config

    recipes = sorted((Path(__file__).resolve().parents[1] / "training" / "configs").glob("*_cmer_*.yaml"))
    assert [p.stem for p in recipes] == ["rsicd_cmer_georsclip", "rsitmd_cmer_georsclip", "rsitmd_cmer_remoteclip"]
    for recipe in recipes:
        config = load_config(recipe)
        entry = zoo.lookup(config.model.pretrained, config.model.arch)
        assert (entry.family, config.method.name) == (recipe.stem.split("_")[-1], "focus")
        assert config.train.out_dir == f"runs/{recipe.stem}"
