"""rsdg-bench: benchmark suite and leaderboard harness for remote-sensing domain generalization."""

__version__ = "0.1.0"
