"""Plug-ins: a user's own models, datasets and distillation methods, without editing dfa-ray.

A plug-in is an ordinary Python module that registers things with the three decorators below
when it is imported. A sweep names its plug-ins in the spec (`plugins: [my_models]`); the
driver imports them before it validates the spec (so `pairs` may name a plug-in model) and
every Ray trial imports them again in its own process before it builds anything, because a
Ray worker is a fresh interpreter that has never seen the driver's registrations. The
single-run commands take `--plugin MODULE` (repeatable). How to make the module importable on
every node, and the contract a plug-in model keeps: docs/plugins.md.

The decorators import the registries lazily: `import dfa_ray` stays free of torch.
"""

from __future__ import annotations

import importlib
import re
import sys
import traceback
from typing import Any, Callable, Iterable, TypeVar

from dfa_ray.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MODULE_RULE = "a dotted Python module name such as my_models or lab.kd.models"


def _register(registry: Any, name: str | Callable | None, what: str) -> Any:
    """`@register_x`, `@register_x()` and `@register_x("name")` all work."""
    def add(obj: Any) -> Any:
        key = name if isinstance(name, str) else getattr(obj, "__name__", None)
        if not key:
            raise TypeError(f"register_{what}: give the {what} a name, e.g. @register_{what}('my_{what}')")
        registry.register(key)(obj)
        return obj

    if callable(name) and not isinstance(name, str):  # used bare: @register_model
        obj, name = name, None
        return add(obj)
    return add


def register_model(name: str | Callable | None = None) -> Any:
    """Decorator: register a model factory `f(num_classes=100, in_channels=3) -> model`.

    The model must keep the layer-group contract (a `dfa_ray.models.GroupedModel` subclass
    does; see docs/plugins.md): `group_info`, `min_size`, `forward`, `forward_groups(x,
    preact)` and `forward_from(g, h, preact)`. `check_model(name)` tests a registered one.
    The name defaults to the function's name; a name already registered is refused.

        @dfa_ray.register_model("tiny_net")
        def tiny_net(num_classes=100, in_channels=3):
            return TinyNet(num_classes, in_channels)
    """
    from dfa_ray.models import MODELS

    return _register(MODELS, name, "model")


def register_dataset(name: str | Callable | None = None) -> Any:
    """Decorator: register a dataset source (a class or an instance) under `name`.

    A source has `default_root()`, `is_present(root)`, `describe()` and `load(root=None,
    download=False, **options) -> dfa_ray.data.Dataset` (uint8 images [N, C, H, W] plus
    labels, see `dfa_ray.data.base`). A decorated class is instantiated once, without
    arguments.
    """
    from dfa_ray.data import DATASETS

    def add(obj: Any) -> Any:
        source = obj() if isinstance(obj, type) else obj
        key = name if isinstance(name, str) else getattr(source, "name", None) or getattr(obj, "__name__", None)
        DATASETS.register(key)(source)
        return obj

    if callable(name) and not isinstance(name, str):
        obj, name = name, None
        return add(obj)
    return add


def register_method(cls: type) -> type:
    """Class decorator: register a distillation method (a `Distiller` subclass with a `name`
    and an `Options` model); see `dfa_ray.engine.methods.base` for the contract."""
    from dfa_ray.engine.methods import register_method as register

    return register(cls)


def import_plugins(modules: Iterable[str], where: str = "plugins") -> list[str]:
    """Import each plug-in module (registering what it defines); returns their names.

    Any failure is a ConfigError naming the module and `where` (the spec field or the flag),
    never a traceback: a module that is not found says how to make it importable; one that
    raises says where, in one line.
    """
    names = list(modules or ())
    for i, module in enumerate(names):
        label = f"{where}[{i}] {module!r}" if where == "plugins" else f"{where} {module!r}"
        if not isinstance(module, str) or not MODULE_RE.match(module):
            raise ConfigError(f"{label}: not a module name; give {MODULE_RULE}")
        if module in sys.modules:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
                raise ConfigError(f"{label}: no module of that name on this Python's path; put its folder on "
                                  "PYTHONPATH or install it (on a cluster: ray job submit --working-dir, or "
                                  "runtime_env py_modules; see docs/plugins.md)") from None
            raise ConfigError(f"{label}: importing it failed: {_where_failed(exc)}") from None
        except Exception as exc:  # the user's code: report where it failed, in one line
            raise ConfigError(f"{label}: importing it failed: {_where_failed(exc)}") from None
    return names


def _where_failed(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}{at}"


def check_model(name: str, num_classes: int = 10, in_channels: int = 3, size: int | None = None) -> None:
    """Check that the registered model `name` keeps the layer-group contract; raises
    ConfigError naming the first broken promise. Runs one forward pass on 2 random images.

    Checked: `group_info` has one entry per group of `forward_groups`, with one block name
    per reported block; every block output has the declared channels and the spatial size
    input / stride; `forward_groups` ends in the same logits as `forward`; and
    `forward_from(g, last output of group g)` gives those logits again, for every g and
    both pre-activation settings.
    """
    import torch

    from dfa_ray.models import create_model

    model = create_model(name, num_classes=num_classes, in_channels=in_channels).eval()
    for attr in ("group_info", "min_size", "forward_groups", "forward_from"):
        if not hasattr(model, attr):
            raise ConfigError(f"model {name!r} has no `{attr}`: it does not keep the layer-group contract "
                              "(subclass dfa_ray.models.GroupedModel; see docs/plugins.md)")
    side = size or max(32, int(model.min_size))
    x = torch.randn(2, in_channels, side, side)
    with torch.no_grad():
        logits = model(x)
        if tuple(logits.shape) != (2, num_classes):
            raise ConfigError(f"model {name!r}: forward gives shape {tuple(logits.shape)}, expected (2, {num_classes})")
        for preact in (True, False):
            out, feats = model.forward_groups(x, preact=preact)
            if len(feats) != len(model.group_info):
                raise ConfigError(f"model {name!r}: forward_groups reports {len(feats)} groups, group_info "
                                  f"declares {len(model.group_info)}")
            if not torch.allclose(out, logits, atol=1e-5):
                raise ConfigError(f"model {name!r}: forward_groups does not end in the logits of forward")
            for g, (info, blocks) in enumerate(zip(model.group_info, feats)):
                if len(blocks) != len(info.block_names):
                    raise ConfigError(f"model {name!r}: group {g} reports {len(blocks)} block outputs, group_info "
                                      f"names {len(info.block_names)} blocks")
                for b, h in enumerate(blocks):
                    want = (2, info.channels, -(-side // info.stride), -(-side // info.stride))
                    if tuple(h.shape) != want:
                        raise ConfigError(f"model {name!r}: group {g} block {b} output has shape {tuple(h.shape)}, "
                                          f"group_info promises {want}")
                again = model.forward_from(g, blocks[-1], preact=preact)
                if not torch.allclose(again, logits, atol=1e-5):
                    raise ConfigError(f"model {name!r}: forward_from({g}, last output of group {g}, preact={preact}) "
                                      "does not give the logits of forward")


__all__ = ["MODULE_RE", "check_model", "import_plugins", "register_dataset", "register_method", "register_model"]
