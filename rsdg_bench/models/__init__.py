"""The stage of models: the adapter contract and input contract, finding adapters (built-ins, plug-ins, files),
reading checkpoints, a model's code identity, a plain module as an adapter, `--compile`, the plug-in
scaffold, and building a task's adapter from a model spec.
"""
