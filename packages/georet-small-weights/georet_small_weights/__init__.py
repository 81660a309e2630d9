"""georet-small's trained weights, as a package of their own (see README.md): georet finds the file here."""

from pathlib import Path

WEIGHTS = Path(__file__).with_name("georet-small.pt")
