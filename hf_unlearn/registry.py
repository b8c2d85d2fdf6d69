"""A plain name -> trainer-class registry.

Built-in methods register themselves when `hf_unlearn.methods` is imported. Outside code registers its own
method the same way::

    from hf_unlearn import UnlearningTrainer, UnlearningConfig, register_method

    @register_method("my_method")
    class MyTrainer(UnlearningTrainer):
        forget_loss = "my_objective"      # a registered forget objective (`hf_unlearn.register_objective`)
        retain_loss = "nll"               # a retain objective, or "none"
        config_class = UnlearningConfig   # or a subclass with the method's own defaults / fields

after which `get_method("my_method")` and the recipes (`method: my_method`) find it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .trainer import UnlearningTrainer

_METHODS: dict[str, type[UnlearningTrainer]] = {}


def register_method(name: str) -> Callable[[type[UnlearningTrainer]], type[UnlearningTrainer]]:
    """Class decorator that registers an `UnlearningTrainer` subclass under `name` (unique)."""

    def decorator(cls: type[UnlearningTrainer]) -> type[UnlearningTrainer]:
        from .plan import run_plan

        run_plan(None, cls)  # an unknown objective fails here, naming the known ones
        if name in _METHODS:
            raise ValueError(
                f"An unlearning method named {name!r} is already registered ({_METHODS[name].__name__}); "
                "choose another name."
            )
        cls.method_name = name
        _METHODS[name] = cls
        return cls

    return decorator


def get_method(name: str) -> type[UnlearningTrainer]:
    """The trainer class registered under `name`; a clear error listing the known names otherwise."""
    if name not in _METHODS:
        raise ValueError(f"Unknown unlearning method {name!r}; choose one of {', '.join(list_methods())}.")
    return _METHODS[name]


def list_methods() -> list[str]:
    """Registered method names, in registration order."""
    return list(_METHODS)
