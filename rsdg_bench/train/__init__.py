"""The stage of training: source-only training under a task's `training:` protocol, its augmentations and its
loss/selection history.
"""
