"""Cross-domain benchmarks: protocols (single-source, leave-one-domain-out), the source x target matrix, overlays.

``run_benchmark(BenchmarkSettings(...))`` is what ``samdg_benchmark`` runs (see documentation/cross_domain.md);
``preset.load_preset(name)`` reads one of the papers' protocols (``presets/<name>.json``, documentation/datasets.md).
"""

from samdg.benchmark.protocols import PROTOCOLS
from samdg.benchmark.runner import BenchmarkSettings, run_benchmark

__all__ = ["PROTOCOLS", "BenchmarkSettings", "run_benchmark"]
