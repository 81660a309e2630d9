"""Write the test rasters (:func:`georet.testing.rasters.write_all`) into a folder, to look at them.

    python tests/data/make_rasters.py OUTDIR
"""

import sys
from pathlib import Path

from georet.testing.rasters import write_all

if __name__ == "__main__":
    for name, path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "test_rasters")).items():
        print(f"{name:14s} {path}")
