"""Tests of synthpre.stability, one module each. A package, so that its conftest.py does not
shadow tests/conftest.py for the suite's `from conftest import ...`."""
