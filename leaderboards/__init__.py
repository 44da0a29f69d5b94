"""Leaderboards: aggregate result records into a board (aggregate.py), render it to files (render.py)."""
