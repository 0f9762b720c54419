"""Code the tests (and the benchmarks) share: builders, real processes, clients.

Fixtures stay in the ``conftest.py`` files, as pytest wants them; everything a test module
imports lives here, so no test imports a conftest or another test module.
"""
