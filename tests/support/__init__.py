"""Test helpers shared by the test packages (put on sys.path by pytest's `pythonpath`)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
