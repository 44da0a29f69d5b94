"""The stage of numbers from counts: int64 confusion matrices, the metrics pinned in DESIGN.md computed from
them under a task's convention, per-sample counts held sparse, and one split's scores. No torch, no model.
"""
