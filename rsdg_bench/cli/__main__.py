"""`python -m rsdg_bench.cli …` (and `torchrun … -m rsdg_bench.cli run …`): the `rsdg-bench` command."""

import sys

from rsdg_bench.cli.main import main

sys.exit(main())
