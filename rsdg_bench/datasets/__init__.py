"""The stage of prepared data: the canonical prepared format (written atomically, read with hash checks),
locks on prepared datasets, class schemas and label maps, the window grid, image previews, reading ahead,
opening a stranger's raster, the leakage audit. Knows nothing of tasks or models; `rsdg_bench.prep` (the
preparers, raw → prepared) builds on it.
"""
