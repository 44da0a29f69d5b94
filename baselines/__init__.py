"""Built-in model adapters, one module each, registered with `@register_adapter("name")`.

The registry reads those lines from the sources to list the built-ins, and imports a module only when its
adapter is asked for (`rsdg_bench.registry`): adding one is a new module with that decorator, nothing else.
"""
