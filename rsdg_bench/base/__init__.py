"""The stage of the ground floor: what every stage uses and that knows nothing of data, tasks or models.

Errors a user can act on, atomic writes and hashes, default folders and path confinement, strict YAML,
bounded JSON, whole-folder swaps, writers that own their output, the generic registry, compiled loops'
settings and the evaluator's memory and host-sync helpers. Imports nothing else of rsdg_bench.
"""
