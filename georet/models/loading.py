"""One :func:`load_model` for every install: torch's factory where torch is installed, else the bundled
georet-base without torch (:mod:`georet.models.light`)."""

from __future__ import annotations

from georet.errors import GeoretError
from georet.models.spec import ModelSpec, has_torch


def load_model(spec: ModelSpec | None = None, device: str = "auto", cache_dir: str | None = None,
               image_runtime: str = "auto", threads: int | None = None):
    """The embedding model named by ``spec`` (default: georet-base with its bundled weights).

    ``threads``: the cores the ONNX image side may use (a Ray worker's share; None: torch's thread count, or
    every core without torch).

    With torch: :func:`georet.models.factory.load_torch_model` (every architecture, device and runtime). Without:
    the bundled georet-base on ONNX and numpy (:class:`~georet.models.light.LightModel`, CPU), or a one-line
    error naming the extra that brings torch.
    """
    spec = spec or ModelSpec()
    if has_torch():
        from georet.models.factory import load_torch_model

        return load_torch_model(spec, device, cache_dir, image_runtime, threads)
    from georet.models.light import TORCH_EXTRA, load_light_model

    if device not in ("auto", "cpu"):
        raise GeoretError(f"device {device} needs torch: {TORCH_EXTRA}")
    return load_light_model(spec, image_runtime, threads)
