"""`preset_config`: a config class whose defaults are a method's (open-unlearning's values where the method is
theirs), so `get_method(name).config_class(output_dir=...)` starts from the right weights."""

from __future__ import annotations

from dataclasses import field, make_dataclass

from ..config import UnlearningConfig


def preset_config(class_name: str, method: str, doc: str, **defaults) -> type[UnlearningConfig]:
    """A dataclass subclass of `UnlearningConfig` with `method` and the given fields' defaults changed."""
    fields = [("method", str, field(default=method, metadata={"help": "Unlearning method name."}))]
    for name, value in defaults.items():
        help_text = UnlearningConfig.__dataclass_fields__[name].metadata.get("help", "")
        fields.append((name, type(value), field(default=value, metadata={"help": help_text})))
    cls = make_dataclass(class_name, fields, bases=(UnlearningConfig,))
    cls.__doc__ = doc
    cls.__module__ = __name__.rsplit(".", 1)[0]
    return cls
