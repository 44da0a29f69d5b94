"""Task kinds: one module per kind, each registered with `@register_kind` (see `base.TaskKind`).

Adding a kind: copy `classification.py` to a new module, change its facts and its three model-facing
steps, and import it below. The task schema's `kind:` accepts exactly the registered names, in the order
they are imported here (the first is the default of a task that names none).
"""

from . import segmentation  # noqa: F401, I001  (importing registers; segmentation first: the default kind)
from . import temporal_segmentation  # noqa: F401
from . import classification  # noqa: F401
from .base import TaskKind
from .registry import get_kind, kind_names, register_kind, require_adapter_kind

__all__ = ["TaskKind", "get_kind", "kind_names", "register_kind", "require_adapter_kind"]
