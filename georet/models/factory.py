"""Model factory: one place that turns (architecture, weights, checkpoint) into an
embedding model for tiles and queries.

Any open_clip architecture works. Weights come from an open_clip pretrained tag
or a remote-sensing CLIP of the zoo (:mod:`georet.models.zoo`; both downloaded
once, for users who are online), a local weights file (offline users; a zoo
file is recognised by its published name), or nothing (a deterministic random init, for tests with the tiny
``georet-tiny`` architecture registered here). A model's *identity* (arch,
weights hash, embedding size, preprocessing) is recorded with every index so
that a query is never answered by vectors from another model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import georet.models.zoo as zoo
from georet.errors import GeoretError, InputError, NotFoundError
from georet.models.checkpoint import apply_checkpoint, read_checkpoint
from georet.models.identity import (
    BUNDLED_TAG,
    BUNDLED_WEIGHTS,
    RANDOM_INIT_SEED,
    describe_weights,
    file_sha256,
    is_file_reference,
    missing_weights_advice,
    model_identity,
    tower_config,
)
from georet.models.io import cache_dir, reachable
from georet.models.onnx_image import check_image_runtime
from georet.models.open_clip_names import open_clip_module, pretrained_tags
from georet.models.preprocess import Preprocess, tower_preprocess
from georet.models.spec import ModelSpec


class EmbeddingModel:
    """An open_clip model ready to embed tiles and queries into one L2-normalised space."""

    def __init__(self, model: torch.nn.Module, tokenizer, spec: ModelSpec, preprocess: Preprocess,
                 weights_id: str, checkpoint_id: str | None, device: torch.device,
                 backbones: dict[str, str] | None = None, zoo_name: str | None = None,
                 tile_ground_m: float | None = None, onnx_image=None):
        self.model = model.eval().to(device)
        #: runs the image side from its ONNX graph (:class:`~georet.models.onnx_image.CachedOnnxImageSide`), or None
        self.onnx_image = onnx_image
        #: ground a tile should cover for this model, when its config declares one (None: the scene-chip
        #: scale every remote-sensing CLIP is trained at, georet.geo.DEFAULT_GROUND_SCALE)
        self.tile_ground_m = tile_ground_m
        self.backbones = backbones
        self.zoo_name = zoo_name
        self.tokenizer = tokenizer
        self.spec = spec
        self.preprocess = preprocess
        self.device = device
        self.weights_id = weights_id
        self.checkpoint_id = checkpoint_id
        with torch.inference_mode():
            probe = self.model.encode_text(self.tokenizer(["probe"]).to(device))
        self.dim = int(probe.shape[-1])

    @property
    def identity(self) -> dict[str, Any]:
        """What must match between an index and the model that queries or extends it (see
        :func:`~georet.models.identity.model_identity`)."""
        return model_identity(self.spec.arch, self.spec.pretrained, self.weights_id, self.checkpoint_id, self.dim,
                              self.preprocess.to_dict(), self.backbones, self.zoo_name)

    @property
    def logit_scale(self) -> float:
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.detach().exp()) if scale is not None else 100.0

    def encode_images(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Preprocessed images (N, 3, h, w) float32 -> float32 (N, dim), unit length.

        The contract every georet model keeps (:class:`~georet.models.light.LightModel` too): numpy in,
        numpy out. A torch tensor (what :meth:`Preprocess.apply` makes here) is taken as is.
        """
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if self.onnx_image is not None:
            return self.onnx_image(images.numpy())
        with torch.inference_mode(), _autocast(self.device):
            feats = self.model.encode_image(images.to(self.device, non_blocking=True))
        return F.normalize(feats.float(), dim=-1).cpu().numpy()

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float32 (N, dim), unit length."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode(), _autocast(self.device):
            feats = self.model.encode_text(tokens)
        return F.normalize(feats.float(), dim=-1).cpu().numpy()

    def sentence_vectors(self, texts: Sequence[str]) -> np.ndarray | None:
        """Texts -> float32 (N, width) unit vectors of the frozen pretrained text tower itself, before any head;
        None for a model without one (open_clip models, fully fine-tuned towers).

        MiniLM learnt general English from a billion sentence pairs; the heads above it learnt RSICD's few
        words. In the tower's own space "cropland" still lies next to "farmland", so short queries and
        legends in other words are matched to the scene classes the model knows there
        (:class:`georet.geo.SceneVocabulary`).
        """
        return self.text_and_sentence_vectors(texts)[1]

    def _frozen_text_tower(self) -> bool:
        from georet.models.tower_clip import TowerCLIP

        return isinstance(self.model, TowerCLIP) and self.model.tower_modules_frozen()

    def text_and_sentence_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(:meth:`encode_text`, :meth:`sentence_vectors`) of ``texts`` from one pass through the text tower."""
        if not self._frozen_text_tower():
            return self.encode_text(texts), None
        with torch.inference_mode(), _autocast(self.device):
            taps, mask, pooled = self.model.text_features(self.tokenizer(list(texts)).to(self.device))
            embeddings = self.model.embed_text(taps, mask, pooled)
        return (F.normalize(embeddings.float(), dim=-1).cpu().numpy(),
                F.normalize(pooled.float(), dim=-1).cpu().numpy())

    def export_text_graph(self) -> Path | None:
        """Write this model's text side into georet's cache as an ONNX graph, so later queries encode text
        without torch (:func:`~georet.models.text_query.load_query_encoder` finds it); None where it cannot
        run there: models other than frozen-tower ones from a weights file, or no ``onnx`` to write it."""
        import importlib.util

        from georet.models.onnx_text import export_text_side, text_graph_path
        from georet.models.text_query import text_meta

        if not self._frozen_text_tower() or self.spec.pretrained is None or self.spec.checkpoint \
                or importlib.util.find_spec("onnx") is None:
            return None
        path = text_graph_path(self.weights_id)
        if not path.is_file():
            meta = text_meta(self.spec.arch, self.weights_id, self.backbones, self.preprocess.size[0], self.dim,
                             self.logit_scale, self.model.text.context_length)
            export_text_side(self.model, path, meta, self.model.text.folder / "tokenizer.json")
        return path


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit choice must exist."""
    name = (name or "auto").lower()
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise InputError("device", "cuda asked for, but torch sees no CUDA GPU (is this a CPU-only torch build?)")
    if name == "mps" and not mps:
        raise InputError("device", "mps asked for, but this torch has no Apple MPS backend")
    if name not in {"cpu", "cuda", "mps"}:
        raise GeoretError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


def _cached_tag_file(cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """Where a pretrained tag's weights already lie on disk, if anywhere."""
    hub = cfg.get("hf_hub")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub.rstrip("/")) if hub.endswith((".bin", ".pt", ".safetensors")) \
            else (hub.rstrip("/"), None)
        for name in [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]:
            hit = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(hit, str):
                return hit
    url = cfg.get("url")
    if url:
        local = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(url)
        if local.is_file():
            return str(local)
    return None


def _fetch_tag(arch: str, tag: str, cache_dir: str | None) -> tuple[str, dict[str, Any]]:
    """Local weights file for a tag; downloads only when the hub answers.

    open_clip alone would retry for about a minute without network; we probe the
    host first so that offline users get an immediate, actionable error.
    """
    if tag == BUNDLED_TAG:  # ModelSpec admits the tag only for architectures with bundled weights
        bundled = BUNDLED_WEIGHTS[arch]
        if not bundled.is_file():
            raise GeoretError(f"the bundled weights of {arch} are missing ({bundled}); {missing_weights_advice(arch)}")
        return str(bundled), {}
    open_clip = open_clip_module()
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        known = ", ".join(pretrained_tags(arch)) or "none"
        raise GeoretError(f"unknown pretrained tag {tag!r} for {arch} (known tags: {known}; or pass a weights file)")
    cached = _cached_tag_file(cfg, cache_dir)
    if cached:
        return cached, cfg
    host = "huggingface.co" if cfg.get("hf_hub") else urllib.parse.urlparse(cfg.get("url", "")).hostname
    if not host or not reachable(host):
        raise GeoretError(
            f"weights {arch}/{tag} are not cached and {host or 'the model hub'} cannot be reached; "
            f"download them where you are online and pass the file: --pretrained /path/to/weights.bin"
        )
    from open_clip.pretrained import download_pretrained

    path = download_pretrained(cfg, cache_dir=cache_dir)
    if not path:
        raise GeoretError(f"could not download weights {arch}/{tag}")
    return path, cfg


def load_torch_model(spec: ModelSpec | None = None, device: str = "auto", cache_dir: str | None = None,
               image_runtime: str = "auto", threads: int | None = None) -> EmbeddingModel:
    """Build the embedding model named by ``spec`` (default: :data:`DEFAULT_ARCH`/:data:`DEFAULT_PRETRAINED`).

    ``image_runtime``: on a CPU a tower model (georet-base) embeds images from
    its ONNX graph, the same embeddings faster (:mod:`georet.models.onnx_image`):
    ``auto`` takes the fastest installed engine
    (:func:`~georet.models.onnx_image.resolve_engine`: OpenVINO in bfloat16
    where the CPU has it, else float32); ``openvino`` (float32),
    ``openvino-bf16`` or ``onnxruntime`` insist; ``torch`` keeps torch.
    ``threads``: the cores that graph may use (None: torch's thread count).
    """
    spec = spec or ModelSpec()
    check_image_runtime(image_runtime)
    tower_cfg = tower_config(spec.arch)
    if tower_cfg is not None:
        return _load_tower_model(spec, tower_cfg, resolve_device(device), image_runtime, threads)
    open_clip = open_clip_module()
    if spec.arch not in open_clip.list_models():
        raise GeoretError(f"unknown model architecture {spec.arch!r} (see `georet models`)")
    torch_device = resolve_device(device)

    tag_cfg: dict[str, Any] = {}
    weights_file: str | None = None
    zoo_entry: zoo.ZooWeights | None = None
    open_clip_tag = False
    if spec.pretrained is not None:
        if is_file_reference(spec.pretrained) or Path(spec.pretrained).is_file():
            if not Path(spec.pretrained).is_file():
                raise NotFoundError(f"weights file not found: {spec.pretrained}")
            weights_file = spec.pretrained
            zoo_entry = zoo.recognise_file(weights_file)
            if zoo_entry and zoo_entry.arch != spec.arch.removesuffix("-quickgelu"):
                raise GeoretError(f"{Path(weights_file).name} holds {zoo_entry.family} {zoo_entry.arch} weights, "
                                  f"not {spec.arch}: pass --model {zoo_entry.arch}")
        elif spec.pretrained in zoo.zoo_families():
            zoo_entry = zoo.lookup(spec.pretrained, spec.arch)
            weights_file = str(zoo.fetch(zoo_entry, cache_dir))
        else:
            weights_file, tag_cfg = _fetch_tag(spec.arch, spec.pretrained, cache_dir)
            open_clip_tag = spec.pretrained != BUNDLED_TAG
    if zoo_entry is not None:
        tag_cfg = {"quick_gelu": zoo_entry.quick_gelu, **zoo_entry.preprocess_cfg}

    preprocess_override = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    torch.manual_seed(RANDOM_INIT_SEED)
    with _without_open_clip_records():  # its "randomly initialised" warning: georet loads the weights next
        model = open_clip.create_model(
            spec.arch,
            pretrained=None,
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            force_preprocess_cfg=preprocess_override or None,
        )
    if weights_file is not None and not open_clip_tag:  # a local or zoo file: every key must fit
        zoo.load_strictly(model, zoo.read_state_dict(weights_file, trusted=zoo_entry is not None),
                          weights_file, spec.arch)
    elif weights_file is not None:  # open_clip's own tags, in the formats open_clip knows
        try:
            open_clip.load_checkpoint(model, weights_file)
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise GeoretError(f"weights file {weights_file} does not fit {spec.arch}: {str(exc).splitlines()[0]}") from exc
    weights_id = file_sha256(weights_file) if weights_file else describe_weights(None)

    checkpoint_id = None
    if spec.checkpoint:
        model, checkpoint_id = apply_checkpoint(model, spec.arch, read_checkpoint(spec.checkpoint))

    preprocess = Preprocess.from_open_clip(model.visual.preprocess_cfg)
    return EmbeddingModel(model, open_clip.get_tokenizer(spec.arch), spec, preprocess,
                          weights_id, checkpoint_id, torch_device, zoo_name=zoo_entry.family if zoo_entry else None)


def _load_tower_model(spec: ModelSpec, config: dict[str, Any], device: torch.device,
                      image_runtime: str = "auto", threads: int | None = None) -> EmbeddingModel:
    """A :class:`~georet.models.tower_clip.TowerCLIP`: backbones from their packages, trained parts from a file."""
    from georet.models.tower_clip import (
        TowerCLIP,
        TowerCLIPConfig,
        backbone_ids,
        load_tower_weights,
        tower_weights_config,
    )

    if spec.checkpoint:
        raise GeoretError(f"{{checkpoint}} applies to open_clip models; {spec.arch} takes its trained weights "
                          "with {pretrained} FILE", names=("checkpoint", "pretrained"))
    weights_file = None
    if spec.pretrained is not None:
        weights_file = str(BUNDLED_WEIGHTS[spec.arch]) if spec.pretrained == BUNDLED_TAG else spec.pretrained
        if not Path(weights_file).is_file():
            raise NotFoundError(f"weights file not found: {weights_file}"
                              + (f"; {missing_weights_advice(spec.arch)}" if spec.pretrained == BUNDLED_TAG else ""))
    # a trained file carries its model config (method, heads, views: `georet train` writes them); the
    # architecture's config file describes the bundled weights and random init
    cfg = tower_weights_config(weights_file) if weights_file and spec.pretrained != BUNDLED_TAG \
        else TowerCLIPConfig.from_dict(config)
    torch.manual_seed(RANDOM_INIT_SEED)
    # a text query never needs timm and the image trunk; a fully fine-tuned trunk is among the weights to load
    model = TowerCLIP(cfg, lazy_image_tower=cfg.method != "full")
    model.load_backbones()
    if weights_file is not None:
        load_tower_weights(model, weights_file)
    if cfg.method != "full":  # the image tower only runs frozen from here on
        model.visual.fold_batch_norm()
    weights_id = file_sha256(weights_file) if weights_file else describe_weights(None)
    backbones = backbone_ids(model)
    return EmbeddingModel(model, model.text.tokenizer(), spec, tower_preprocess(cfg.image_size), weights_id, None, device,
                          backbones=backbones, tile_ground_m=cfg.tile_ground_m,
                          onnx_image=_onnx_image_side(spec, model, backbones, device, image_runtime, threads))


def _onnx_image_side(spec: ModelSpec, model, backbones: dict[str, str], device: torch.device, runtime: str,
                     threads: int | None):
    """The tower's image side as an ONNX graph (OpenVINO or ONNX Runtime runs it), named by a digest of its
    weights, or None (torch runs it)."""
    import importlib.util

    from georet.models.onnx_image import (
        CachedOnnxImageSide,
        export_image_side,
        resolve_engine,
        weights_digest,
    )

    if runtime == "torch" or device.type != "cpu":
        return None
    engine = resolve_engine(runtime)
    if engine is None or importlib.util.find_spec("onnx") is None:  # onnx: the exporter writes the graph with it
        return None
    tensors = {name: value.detach().cpu().numpy() for name, value in model.state_dict().items()
               if not name.startswith("text")}  # the image trunk is not built yet: its file's hash stands for it
    digest = weights_digest(tensors, {**model.cfg.to_dict(), "image_backbone": backbones["image"]})
    path = cache_dir("onnx") / f"{spec.arch}-{digest[:20]}.onnx"
    return CachedOnnxImageSide(path, lambda out: export_image_side(model, out, model.cfg.image_size), engine,
                               threads=threads or torch.get_num_threads())


@contextlib.contextmanager
def _without_open_clip_records() -> Iterator[None]:
    """Drop the log records open_clip's own code writes to the root logger, for the duration only
    (other libraries' and threads' records pass; no logger is disabled)."""
    root = logging.getLogger()

    def from_elsewhere(record: logging.LogRecord) -> bool:
        return f"{os.sep}open_clip{os.sep}" not in record.pathname

    root.addFilter(from_elsewhere)
    try:
        yield
    finally:
        root.removeFilter(from_elsewhere)
