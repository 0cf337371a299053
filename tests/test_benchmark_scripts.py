"""Every script in benchmarks/ imports against the current library (they run only in
`make bench`, so a renamed function would otherwise break them silently) and has a `main`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_benchmark_script_imports_and_has_a_main(script: Path) -> None:
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its imports; `main()` runs only under __main__
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
