"""Every benchmark script still imports against today's package: the scripts run rarely and by
hand, so a moved or renamed function would otherwise surface only on the day someone measures."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # top-level imports only: main() runs under __main__
    assert callable(getattr(module, "main", None)), f"{script} has no main()"
    sys.modules.pop(spec.name, None)
