"""In-domain figures of a sensor-augmented run: its validation mR (members and assembled) and rsicd_aid test mR.

    python experiments/sensor_augment/summarise.py --run runs/georet-base-sensor \
        --data ../shared/data/rsicd_aid/dataset_rsicd_aid.json --out experiments/sensor_augment/results/in_domain.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from georet.models import ModelSpec, load_model
from georet.provenance import write_results
from georet.training import load_retrieval_data
from georet.training.evaluate import evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a `georet train` output folder (summary.json, best.pt)")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    summary = json.loads((args.run / "summary.json").read_text())
    members = [m["best_val"]["mR"] for m in summary["members"]]
    model = load_model(ModelSpec("georet-base", str(args.run / "best.pt")), device="cpu")
    test = evaluate(model, load_retrieval_data(args.data, "test"))
    write_results(args.out, {"run": str(args.run), "val_mR_assembled": round(summary["best_val"]["mR"], 2),
                             "val_mR_members": [round(v, 2) for v in members],
                             "val_mR_members_mean_std": [round(float(np.mean(members)), 2),
                                                         round(float(np.std(members, ddof=1)), 2)],
                             "test": {k: round(float(v), 2) for k, v in test.items()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
