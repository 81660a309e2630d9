"""The training config: typed dataclasses and one strict loader for YAML recipes and ``--set`` alike.

A recipe is YAML with the sections below; ``extends: base.yaml`` (relative to
the recipe) starts from another recipe, so a per-dataset recipe holds only what
differs. ``--set section.key=value`` overrides (values parsed as YAML) are
applied after the files. Then everything is checked at once: an unknown key, a
value of the wrong type or a choice outside its ``Literal`` is a
:class:`GeoretError` naming the key and what it accepts — never silently ignored.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from georet.errors import GeoretError, InputError, NotFoundError
from georet.models import AdapterConfig
from georet.training.sources import SourceSpec

EXTENDS_KEY = "extends"


@dataclass(frozen=True)
class ModelConfig:
    """The base model: an open_clip architecture and its weights (tag, file, or null = random init), or a
    tower model by its config name (``georet-base``; its towers come from their packages: pretrained null)."""

    #: the package's default model, so a recipe that names no model trains georet-base's heads offline (an
    #: open_clip CLIP names its weights too: ``arch: ViT-B-32``, ``pretrained: openai``)
    arch: str = "georet-base"
    pretrained: str | None = None
    #: tower models: heads per tower (null: the model config's). Above 1, one head is trained per seed
    #: (train.seed, +1, ...) on the frozen towers and the heads are assembled into one ensemble
    head_members: int | None = None


@dataclass(frozen=True)
class LossConfig:
    name: Literal["infonce", "hmmc"] = "infonce"
    #: negative sample recycling: size of the feature queues (0 = off), their weight and warm-up
    queue_size: int = 0
    queue_weight: float = 1.0
    queue_warmup_steps: int = 0
    #: PE-RSITR's HMMC: weights of the intra-modal terms and the token dropout of their second view
    hmmc_weight_image: float = 1.0
    hmmc_weight_text: float = 1.0
    hmmc_token_dropout: float = 0.2


@dataclass(frozen=True)
class SceneAugConfig:
    #: probability of prefixing a training caption with its scene ("an aerial image of {scene}. ...")
    train_p: float = 0.0
    #: weight of the query-time scene prior used for validation (model selection)
    query_prior: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    #: a Karpathy-style .json file or a GaLR/AMFMN precomp folder ...
    path: str | None = None
    image_root: str | None = None
    train_split: str = "train"
    #: fraction of the training images held out for model selection
    val_fraction: float = 0.1
    #: draw validation images only among those with at least this many distinct captions (2: like the
    #: RSICD/RSITMD test splits, where images rarely repeat one caption; see RetrievalSplit.split_validation)
    val_min_distinct_captions: int = 1
    #: seed of the validation draw (null: train.seed); fixed apart from train.seed, runs of several seeds
    #: (and the members of a head ensemble) select on one validation set
    val_seed: int | None = None
    #: train on each (image, caption) pair once: half the RSICD images repeat one caption five times
    distinct_pairs: bool = False
    #: keep only images of these scene classes
    scenes: tuple[str, ...] | None = None
    #: ... or tiled scenes of your own region: a raster plus a land-cover layer
    raster: str | None = None
    landcover: str | None = None
    landcover_field: str | None = None
    tile_size: int | str = 128
    #: more training images beside data.path: scene folders, land-cover masks, tiles labelled by eye
    #: (:class:`georet.training.sources.SourceSpec`), each split by place; only their training side is used
    extra: tuple[SourceSpec, ...] = ()


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.02
    warmup_steps: int = 100
    seed: int = 0
    #: bf16 autocast on CUDA
    amp: bool = True
    grad_checkpointing: bool = False
    #: default: once per epoch
    eval_every_steps: int | None = None
    checkpoint_every_steps: int = 500
    out_dir: str = "runs/georet"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    #: progress bar: None = when stderr is a terminal
    progress: bool | None = None
    #: stop after this many seconds of training (null: run every step), for equal-wall-clock baselines
    time_budget_s: float | None = None
    #: tower models with frozen towers (methods frozen, focus): compute the towers' outputs once into
    #: cache_dir and train over them (null: whenever the method allows it)
    cache_features: bool | None = None
    cache_dir: str = "runs/feature_cache"
    #: augmented views (flips, turns, crops) of each image in the cache, beside the model's own views
    augmented_views: int = 2
    #: more cached views that also carry a sensor shift (blur, coarser pixels, haze, colour cast, JPEG:
    #: :func:`georet.training.feature_cache.sensor_shift`), so the heads learn how other sensors' imagery
    #: looks to the frozen towers
    sensor_views: int = 0


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: AdapterConfig = field(default_factory=AdapterConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    scene_aug: SceneAugConfig = field(default_factory=SceneAugConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready dict (tuples as lists)."""
        return _plain(asdict(self))


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Recipe file (with its ``extends`` chain) over the defaults, then ``key.sub=value`` overrides; checked."""
    raw: dict[str, Any] = _read_recipe(Path(path), ()) if path else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError("overrides", f"take key=value, got {item!r}")
        node = raw
        *parents, leaf = key.strip().split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InputError("overrides", f"{key}: {part!r} is not a section")
            node = child
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise InputError("overrides", f"{key}: cannot parse value {value!r}") from None
    return build(TrainConfig, raw)


def _read_recipe(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.expanduser().resolve()
    if path in seen:
        raise GeoretError(f"{path}: recipes extend each other in a loop")
    if not path.is_file():
        raise NotFoundError(f"config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise GeoretError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise GeoretError(f"{path}: a config is a mapping of sections")
    parent = data.pop(EXTENDS_KEY, None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise GeoretError(f"{path}: {EXTENDS_KEY} takes one file name")
    return _merge(_read_recipe(path.parent / parent, (*seen, path)), data)


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


T = typing.TypeVar("T")


def build(cls: type[T], raw: Mapping[str, Any], where: str = "") -> T:
    """A ``cls`` dataclass from ``raw``, checking every key and value against the type hints."""
    if not isinstance(raw, Mapping):
        raise GeoretError(f"config {where or 'root'}: expected a section (mapping), got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    values = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise GeoretError(f"config: unknown key {path!r} (known{' in ' + where if where else ''}: {', '.join(names)})")
        values[key] = _convert(hints[key], value, path)
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise GeoretError(f"config {where or 'root'}: {exc}") from None


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if origin is Literal:
        if value not in args:
            raise GeoretError(f"config {path}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise GeoretError(f"config {path}: must not be null")
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, path)
            except GeoretError:
                continue
        raise GeoretError(f"config {path}: expected {_describe(hint)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise GeoretError(f"config {path}: expected a list, got {value!r}")
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise GeoretError(f"config {path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GeoretError(f"config {path}: expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GeoretError(f"config {path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise GeoretError(f"config {path}: expected text, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")  # a bug in the dataclasses above


def _describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    names = [getattr(a, "__name__", str(a)) for a in args]
    return " or ".join(names) + (" or null" if type(None) in typing.get_args(hint) else "")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
