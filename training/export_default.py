"""Turn a full-fine-tuning checkpoint of georet-small into the weights georet ships.

The trainer's checkpoints carry optimiser-free trainable parameters plus the
config; the package needs a plain open_clip state dict, stored in float16 to
stay small (the model runs in float32: the weights are upcast on load).

    python training/export_default.py runs/georet_small/best.pt [--out georet/models/weights/georet-small.pt]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "georet" / "models" / "weights" / "georet-small.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    if ckpt.get("method") != "full" or ckpt.get("arch") != "georet-small":
        raise SystemExit(f"{args.checkpoint}: expected a full fine-tuning checkpoint of georet-small")
    weights = {k.removeprefix("clip."): v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, args.out)
    print(f"wrote {args.out}: {sum(v.numel() for v in weights.values()):,} parameters, "
          f"{args.out.stat().st_size / 2**20:.1f} MB (step {ckpt.get('step')}, val mR {ckpt.get('val', {}).get('mR', float('nan')):.2f})")


if __name__ == "__main__":
    main()
