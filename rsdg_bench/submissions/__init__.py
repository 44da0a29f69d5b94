"""Submissions: what an outside researcher hands to a leaderboard's maintainer, and how it is checked.

Two routes (docs/submissions.md):
- **prediction maps** (the format in `prediction_maps.py`): `predict` (`predict_maps.py`) writes one map per
  sample of a task's evaluated splits plus `predictions.json`; `score` (`score_maps.py`, no torch) validates
  them against the maintainer's prepared data (labels that may never have been public) and writes the same
  record type `run` writes.
- **model bundles** (`bundle.py`, `verify.py`): `submission pack` puts a model's records, its adapter's
  source, checkpoint hashes and software with a hashed manifest in one file; `submission verify` checks it
  against the installed tasks and prepared data and can re-run samples; `leaderboard build --submissions`
  shows what passed with a badge and lists what did not.
"""
