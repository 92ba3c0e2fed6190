"""The benchmark harness: journalstore against containers/storage's design and SQLite.

    python -m benchmarks            # full run: sizes 1,000 / 10,000 / 100,000, fsync on and off
    python -m benchmarks --quick    # size 1,000 only, under a minute
    python -m benchmarks --tiny     # smoke test of the adapters (no timing claims)

Modules: `adapters` (the interface and the journalstore and sqlite adapters), `seed` (the
containers/storage persistence ported to Python), `workloads` (what is measured and checked),
`probe` (measurements in a fresh interpreter), `report` (tables, JSON, plot, RESULTS.md).
"""
