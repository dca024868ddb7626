"""Benchmarks and probes of the study's speed (not tests: pytest never collects them).

Run each from the project root as a module, e.g. `python -m benchmarks.benchmark --quick
--out quick.json`; see benchmarks/README.md. Their recorded results are in
benchmarks/results/."""
