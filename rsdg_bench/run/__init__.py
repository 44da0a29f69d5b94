"""The stage of running: `run` (tasks → adapter → records, resumable), the pre-flight check, training jobs here
or under torchrun, and cluster launchers.
"""
