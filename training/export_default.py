"""Write the weights georet ships from a training run's ``best.pt``.

* a tower model (georet-base: ``georet train --config training/configs/georet-base.yaml``): the run's
  weights file already holds only the trained parts in float16 with the config and the backbone hashes;
  it is checked against the installed backbones and copied.
* georet-small (a full fine-tuning checkpoint of an open_clip model): the trainer's checkpoint becomes a
  plain open_clip state dict in float16 (the model runs in float32: the weights are upcast on load).

    python training/export_default.py runs/georet-base/best.pt      # -> georet/models/weights/georet-base.pt
    python training/export_default.py runs/georet_small/best.pt     # -> packages/georet-small-weights/.../georet-small.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from georet.files import atomic_write
from georet.models import BUNDLED_WEIGHTS
from georet.models.identity import TOWER_WEIGHTS_FORMAT
from georet.models.io import load_torch_file

#: georet-small's weights live in a package of their own, in this repository
SMALL_WEIGHTS = (Path(__file__).resolve().parents[1] / "packages" / "georet-small-weights" / "georet_small_weights"
                 / "georet-small.pt")


def export(checkpoint: Path, out: Path | None) -> str:
    payload = load_torch_file(checkpoint, "training checkpoint")
    if isinstance(payload, dict) and payload.get("format") == TOWER_WEIGHTS_FORMAT:
        from georet.models.tower_clip import TowerCLIP, load_tower_weights, tower_weights_config

        model = TowerCLIP(tower_weights_config(checkpoint))  # refuses a file the installed backbones do not fit
        model.load_backbones()
        load_tower_weights(model, checkpoint)
        out = out or BUNDLED_WEIGHTS["georet-base"]
        atomic_write(out, lambda tmp: torch.save(payload, tmp))
        val = payload.get("record", {}).get("val", {}).get("mR", float("nan"))
    elif isinstance(payload, dict) and payload.get("method") == "full" and payload.get("arch") == "georet-small":
        weights = {k.removeprefix("clip."): v.half() if v.is_floating_point() else v
                   for k, v in payload["state_dict"].items()}
        out = out or SMALL_WEIGHTS
        atomic_write(out, lambda tmp: torch.save(weights, tmp))
        val = payload.get("val", {}).get("mR", float("nan"))
    else:
        raise SystemExit(f"{checkpoint}: expected a tower-model weights file or a full fine-tuning checkpoint "
                         "of georet-small")
    return f"wrote {out}: {out.stat().st_size / 2**20:.1f} MB (validation mR {val:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, help="default: the bundled weights file of the run's model")
    args = parser.parse_args()
    print(export(args.checkpoint, args.out))


if __name__ == "__main__":
    main()
