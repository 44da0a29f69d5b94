"""The `rsdg-bench` command line, one module per command group.

Every subcommand is a thin layer over a library function. `main` assembles the parser; `options` holds what
several commands share (argument types, folders, and the option groups every command of a kind declares once);
`data_commands` (prepare, export, fake), `task_commands`, `model_commands` (train, run), `results_commands`
(results, leaderboard), `submission_commands` (predict, score, submission), `adapter_commands` and
`demo_command` each register their subcommands. `python -m rsdg_bench.cli` (and torchrun's `-m`) runs `main`.
"""

from rsdg_bench.cli.main import build_parser, configure_logging, main

__all__ = ["build_parser", "configure_logging", "main"]
