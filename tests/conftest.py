"""Fixtures shared by every test package (helpers live in tests/support/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.stores import make_dataset, to_variant, write


@pytest.fixture
def make_store():
    """Factory ``make_store(tmp_path, name="era5.zarr", variant={...}, **make_dataset_kwargs)``
    -> (path, canonical reference dataset)."""

    def factory(tmp_path: Path, name: str = "era5.zarr", variant: dict | None = None, **kwargs):
        ref = make_dataset(**kwargs)
        path = write(to_variant(ref, **(variant or {})), Path(tmp_path) / name)
        return path, ref

    return factory
