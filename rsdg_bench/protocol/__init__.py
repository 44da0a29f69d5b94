"""The stage of tasks: the task and suite schema (versioned, hashed), the task-kind contract and its registry,
the metric table and the metric conventions, where a task's splits live, label-efficiency subsets, and
`TaskData`, the only door to a task's samples (target splits shut during training). Knows nothing of models.
"""
