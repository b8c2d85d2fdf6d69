"""A plain name -> trainer-class registry.

Built-in methods register themselves when `hf_unlearn.methods` is imported. Outside code registers its own
method the same way::

    from hf_unlearn import UnlearningTrainer, UnlearningConfig, register_method

    @register_method("my_method")
    class MyTrainer(UnlearningTrainer):
        forget_loss = "my_objective"        # a registered forget objective (`hf_unlearn.register_objective`)
        retain_loss = "nll"                 # a retain objective, or "none"
        config_defaults = {"forget_weight": 0.5}  # optional: the method's own defaults

after which `get_method("my_method")` and the recipes (`method: my_method`) find it. Registration gives the class
its config class (`MyTrainer.config_class`, named `MyConfig`): `UnlearningConfig` plus the fields of its
objectives' `params`, with `method="my_method"` and `config_defaults`; a class that sets `config_class` itself
keeps it.
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
        if "config_class" not in cls.__dict__:
            cls.config_class = method_config_class(name, cls)
        _METHODS[name] = cls
        return cls

    return decorator


def method_config_class(name: str, cls: type[UnlearningTrainer]):
    """The config class of method `name` (trainer class `cls`): `UnlearningConfig` + its objectives' fields, with
    `method=name` and `cls.config_defaults`; named after the trainer (`NPOTrainer` -> `NPOConfig`)."""
    from .config import UnlearningConfig, compose_config
    from .plan import run_plan

    plan = run_plan(None, cls)
    params = tuple(o.params for o in plan.objectives if o.params is not None)
    defaults = {"method": name, **cls.config_defaults}
    changed = ", ".join(f"{k} {v!r}" for k, v in cls.config_defaults.items())
    fields = ", ".join(f.name for p in params for f in p.__dataclass_fields__.values()) or "none"
    doc = (
        f"`UnlearningConfig` for method {name!r} (forget_loss {plan.forget_loss!r}, retain_loss {plan.retain_loss!r}):"
        f" its objectives' fields ({fields})" + (f" and its defaults ({changed})." if changed else ".")
    )
    class_name = cls.__name__.removesuffix("Trainer") + "Config"
    return compose_config(class_name, UnlearningConfig, params, defaults, doc)


def get_method(name: str) -> type[UnlearningTrainer]:
    """The trainer class registered under `name`; a clear error listing the known names otherwise."""
    if name not in _METHODS:
        raise ValueError(f"Unknown unlearning method {name!r}; choose one of {', '.join(list_methods())}.")
    return _METHODS[name]


def list_methods() -> list[str]:
    """Registered method names, in registration order."""
    return list(_METHODS)
