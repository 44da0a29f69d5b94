"""Built-in model adapters, one module each, registered with `@register_adapter("name")`.

Each is also declared as an entry point of the group `rsdg_bench.adapters` in pyproject.toml, which is how the
registry (`rsdg_bench.models.registry`) lists the built-ins without importing them and imports a module only
when its adapter is asked for: adding one is a new module with that decorator and one entry-point line.
"""
