"""Published remote-sensing CLIPs by name: where their weights live, how they load, what they reported.

The registry is data (``zoo.json``), like open_clip's pretrained tables: one
family per project (``remoteclip``, ``georsclip``, ``skyclip``, ``farslip``…),
one file per architecture. This module finds a family's file for an
architecture, fetches it once (Hugging Face hub cache, or an archive URL),
reads whichever checkpoint layout the project uses, and loads it *strictly*:
projects' own snippets often load with ``strict=False``, which silently keeps
random weights for every key that does not match.
"""

from __future__ import annotations

import functools
import json
import os
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import torch

from georet.errors import GeoretError, NotFoundError
from georet.models.io import load_torch_file, reachable

ZOO_FILE = Path(__file__).with_name("zoo.json")
#: open_clip's default (OpenAI CLIP) normalisation; every family in the registry uses it.
OPENAI_PREPROCESS = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711),
                     "interpolation": "bicubic", "resize_mode": "shortest"}
PREPROCESS = {"openai": OPENAI_PREPROCESS}
LAYOUTS = ("state_dict", "zip/training-checkpoint")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin")


@dataclass(frozen=True)
class ZooWeights:
    """One downloadable weights file of one family, for one architecture."""

    family: str
    arch: str
    title: str
    paper: str
    code: str
    licence: str | None
    trained_on: str
    layout: str
    quick_gelu: bool
    preprocess: str
    loading: str
    file: str
    hf_hub: str | None = None
    url: str | None = None
    sha256: str | None = None
    reported: Mapping[str, Any] = field(default_factory=dict)
    unconfirmed: tuple[str, ...] = ()

    @property
    def file_name(self) -> str:
        return Path(self.file).name

    @property
    def source(self) -> str:
        """Where a browser downloads the file."""
        if self.hf_hub:
            return f"{_hf_endpoint()}/{self.hf_hub}/resolve/main/{self.file}"
        return str(self.url)

    @property
    def preprocess_cfg(self) -> dict[str, Any]:
        return dict(PREPROCESS[self.preprocess])

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


_FAMILY_KEYS = {"title", "paper", "code", "licence", "trained_on", "layout", "quick_gelu", "preprocess", "loading",
                "unconfirmed", "files"}
_FILE_KEYS = {"hf_hub", "url", "file", "sha256", "reported", "quick_gelu", "unconfirmed"}


def _parse_registry(raw: dict[str, Any]) -> tuple[ZooWeights, ...]:
    """Registry JSON -> entries; any unknown key or value is an error (a typo must not pass as a default)."""
    entries = []
    for family, spec in raw["families"].items():
        if unknown := set(spec) - _FAMILY_KEYS:
            raise ValueError(f"zoo family {family}: unknown keys {sorted(unknown)}")
        if spec["layout"] not in LAYOUTS or spec["preprocess"] not in PREPROCESS:
            raise ValueError(f"zoo family {family}: layout {spec['layout']!r} / preprocess {spec['preprocess']!r}")
        for arch, file_spec in spec["files"].items():
            if unknown := set(file_spec) - _FILE_KEYS:
                raise ValueError(f"zoo {family}/{arch}: unknown keys {sorted(unknown)}")
            if bool(file_spec.get("hf_hub")) == bool(file_spec.get("url")):
                raise ValueError(f"zoo {family}/{arch}: give exactly one of hf_hub and url")
            entries.append(ZooWeights(
                family=family, arch=arch, title=spec["title"], paper=spec["paper"], code=spec["code"],
                licence=spec["licence"], trained_on=spec["trained_on"], layout=spec["layout"],
                quick_gelu=bool(file_spec.get("quick_gelu", spec["quick_gelu"])), preprocess=spec["preprocess"],
                loading=spec["loading"], file=file_spec["file"], hf_hub=file_spec.get("hf_hub"),
                url=file_spec.get("url"), sha256=file_spec.get("sha256"), reported=file_spec.get("reported", {}),
                unconfirmed=tuple(spec.get("unconfirmed", [])) + tuple(file_spec.get("unconfirmed", []))))
    return tuple(entries)


@functools.lru_cache(maxsize=1)
def zoo_entries() -> tuple[ZooWeights, ...]:
    """Every registry entry, in registry order."""
    return _parse_registry(json.loads(ZOO_FILE.read_text()))


def zoo_families() -> list[str]:
    return list(dict.fromkeys(e.family for e in zoo_entries()))


def zoo_tags_for(arch: str) -> list[str]:
    """The zoo names that have weights for ``arch``."""
    return [e.family for e in zoo_entries() if e.arch == arch]


def lookup(family: str, arch: str) -> ZooWeights:
    """The entry for ``--model arch --pretrained family``; a one-line error says what exists instead."""
    entries = [e for e in zoo_entries() if e.family == family]
    if not entries:
        raise GeoretError(f"unknown remote-sensing model {family!r}; known: {', '.join(zoo_families())}")
    for entry in entries:
        if entry.arch == arch:
            return entry
    raise GeoretError(f"{family} has no {arch} weights; it exists for {', '.join(e.arch for e in entries)} "
                      f"(--model {entries[0].arch} --pretrained {family})")


def recognise_file(path: str | Path) -> ZooWeights | None:
    """The entry whose published file name ``path`` carries, if any (users keep the names they download)."""
    name = Path(path).name
    return next((e for e in zoo_entries() if e.file_name == name), None)


# -- fetching ----------------------------------------------------------------
def _hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _offline_error(entry: ZooWeights, why: str) -> GeoretError:
    return GeoretError(f"{entry.family} {entry.arch} weights are not cached and {why}; download {entry.source} "
                       f"where you are online and pass the file: --model {entry.arch} --pretrained "
                       f"/path/to/{entry.file_name}")


def _url_cache_dir(cache_dir: str | None) -> Path:
    root = Path(cache_dir) if cache_dir else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "georet"
    return root / "zoo"


def cached(entry: ZooWeights, cache_dir: str | None = None) -> Path | None:
    """Where ``entry``'s file already lies (Hugging Face hub cache, or georet's cache for archive URLs)."""
    if entry.hf_hub:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(entry.hf_hub, entry.file, cache_dir=cache_dir)
        return Path(hit) if isinstance(hit, str) else None
    target = _url_cache_dir(cache_dir) / entry.file_name
    return target if target.is_file() else None


def fetch(entry: ZooWeights, cache_dir: str | None = None, progress: bool = True) -> Path:
    """The local weights file of ``entry``, downloaded once if it is not cached yet.

    The host is probed first (3 s), so offline users get the advice at once
    instead of a minute of retries; ``HF_HUB_OFFLINE=1`` skips the probe.
    """
    if hit := cached(entry, cache_dir):
        return _verified(hit, entry)
    if entry.hf_hub:
        from huggingface_hub import hf_hub_download

        if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
            raise _offline_error(entry, "HF_HUB_OFFLINE is set")
        if not reachable(_hf_endpoint()):
            raise _offline_error(entry, f"{urllib.parse.urlparse(_hf_endpoint()).hostname} cannot be reached")
        try:
            path = hf_hub_download(entry.hf_hub, entry.file, cache_dir=cache_dir, endpoint=_hf_endpoint())
        except Exception as exc:  # the hub client raises many types (HTTP, offline, repo errors)
            raise GeoretError(f"could not download {entry.source}: {str(exc).splitlines()[0]}") from None
        return _verified(Path(path), entry)
    target = _url_cache_dir(cache_dir) / entry.file_name
    if not reachable(str(entry.url)):
        raise _offline_error(entry, f"{urllib.parse.urlparse(str(entry.url)).hostname} cannot be reached")
    _download(str(entry.url), target, progress)
    return _verified(target, entry)


def _download(url: str, target: Path, progress: bool) -> None:
    """Stream ``url`` to ``target`` through a ``.part`` file, so an interrupted download never looks complete."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out, \
                tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                     desc=target.name, disable=not progress) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise GeoretError(f"could not download {url}: {exc}") from None
    part.replace(target)


def _verified(path: Path, entry: ZooWeights) -> Path:
    """Check the file against the registry's sha256 where the project publishes one."""
    if entry.sha256:
        from georet.models.identity import file_sha256

        actual = file_sha256(path)
        if actual != entry.sha256:
            raise GeoretError(f"{path} is not the published {entry.family} {entry.arch} file "
                              f"(sha256 {actual[:12]}…, expected {entry.sha256[:12]}…); delete it and download again")
    return path


# -- reading and strict loading -------------------------------------------------
def read_state_dict(path: str | Path, trusted: bool = False, extract_dir: str | Path | None = None
                    ) -> dict[str, torch.Tensor]:
    """The model weights in any layout the registry knows, as open_clip key names.

    Layouts: a plain state dict; an open_clip training checkpoint (weights under
    ``state_dict``, ``module.`` prefixes from DistributedDataParallel); either
    of these as the only weights file inside a zip archive (SkyCLIP). Files are
    read with ``weights_only=True``; only a registry file (``trusted``) may fall
    back to full unpickling, as the projects' own loaders do.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"weights file not found: {path}")
    if _is_archive(path):
        path = _extract_archive(path, Path(extract_dir) if extract_dir else path.parent)
    state = state_dict_of(load_torch_file(path, trusted=trusted))
    if state is None:
        raise GeoretError(f"{path} holds no model weights (expected a state dict of tensors, "
                          "or a training checkpoint with one under 'state_dict')")
    return state


def state_dict_of(payload: Any) -> dict[str, torch.Tensor] | None:
    """The open_clip-named weights inside a loaded checkpoint payload, or None if it holds none.

    Unwraps a training checkpoint's ``state_dict`` and DistributedDataParallel's
    ``module.`` prefixes.
    """
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not payload or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        return None
    if all(k.startswith("module.") for k in payload):
        payload = {k[len("module."):]: v for k, v in payload.items()}
    return payload


def _is_archive(path: Path) -> bool:
    """A zip archive that *contains* weight files (torch's own .pt files are zips too, with data.pkl inside)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return not any(n.endswith("data.pkl") for n in names) and any(n.endswith(_WEIGHT_SUFFIXES) for n in names)


def _extract_archive(path: Path, extract_dir: Path) -> Path:
    """Extract the archive's one weights file once, next to the archive (or into ``extract_dir``)."""
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if m.filename.endswith(_WEIGHT_SUFFIXES) and not m.is_dir()]
        if len(members) != 1:
            raise GeoretError(f"{path} holds {len(members)} weight files "
                              f"({', '.join(m.filename for m in members[:4])}); extract the one you want and pass it")
        member = members[0]
        target = extract_dir / f"{path.stem}.extracted" / member.filename
        if target.is_file() and target.stat().st_size == member.file_size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        with archive.open(member) as src, open(part, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
        part.replace(target)
        return target




def load_strictly(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | Path,
                  arch: str) -> None:
    """Load every weight or nothing: any missing, unexpected or mis-shaped key is an error naming it."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    misshaped = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    problems = [f"{len(keys)} {what} key{'s' if len(keys) > 1 else ''} ({', '.join(keys[:2])}"
                f"{', …' if len(keys) > 2 else ''})"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
    if problems:
        raise GeoretError(f"{Path(path).name} does not fit {arch}: {'; '.join(problems)}; nothing was loaded")
    model.load_state_dict(dict(state_dict), strict=True)


def infer_arch(state_dict: Mapping[str, torch.Tensor], candidates: Mapping[str, dict[str, Any]]) -> str | None:
    """The open_clip architecture whose config has this state dict's shapes, for files with unknown names.

    ``candidates`` maps names to open_clip model configs. Variants that differ
    only in their activation (``-quickgelu``) have the same keys, so the plain
    name wins; the registry names QuickGELU where a family needs it.
    """
    signature = _signature(state_dict)
    if signature is None:
        return None
    matches = sorted((name for name, cfg in candidates.items() if _config_signature(cfg) == signature),
                     key=lambda n: (n.endswith("-quickgelu"), len(n)))
    return matches[0] if matches else None


def _signature(sd: Mapping[str, torch.Tensor]) -> tuple | None:
    if "text_projection" not in sd or "positional_embedding" not in sd:
        return None
    text = (sd["positional_embedding"].shape[0], sd["token_embedding.weight"].shape[0],
            sd["positional_embedding"].shape[1], _count(sd, "transformer.resblocks."))
    embed_dim = sd["text_projection"].shape[1]
    if "visual.conv1.weight" in sd and "visual.positional_embedding" in sd:
        width, _, patch, _ = sd["visual.conv1.weight"].shape
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        return ("vit", embed_dim, grid * patch, patch, width, _count(sd, "visual.transformer.resblocks.")) + text
    if "visual.attnpool.positional_embedding" in sd:
        layers = tuple(_count(sd, f"visual.layer{i}.") for i in range(1, 5))
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        return ("rn", embed_dim, grid * 32, layers, sd["visual.layer1.0.conv1.weight"].shape[0]) + text
    return None


def _config_signature(cfg: dict[str, Any]) -> tuple | None:
    vision, text_cfg = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if any(k in vision for k in ("timm_model_name",)) or "hf_model_name" in text_cfg:
        return None
    text = (text_cfg.get("context_length", 77), text_cfg.get("vocab_size", 49408), text_cfg.get("width", 512),
            text_cfg.get("layers", 12))
    size = vision.get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    if isinstance(vision.get("layers"), (list, tuple)):
        return ("rn", cfg["embed_dim"], size, tuple(vision["layers"]), vision.get("width", 64)) + text
    if "patch_size" in vision:
        return ("vit", cfg["embed_dim"], size, vision["patch_size"], vision["width"], vision["layers"]) + text
    return None


def _count(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".", 1)[0] for k in sd if k.startswith(prefix)})
