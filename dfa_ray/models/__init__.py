"""The CIFAR model zoo: CRD-benchmark architectures that expose their layer groups.

`create_model(name, num_classes, in_channels)` builds any registered model; `MODELS.names()`
lists them; `model_summary(name)` describes one without building its weights. Every model is
a `GroupedModel` (see `base.py` for the layer-group contract DFA relies on).
"""

from dfa_ray.models.base import GroupedModel, GroupInfo
from dfa_ray.models.registry import MODELS, create_model, model_summary

# Importing a family module registers its models, in the order `MODELS.names()` lists them.
from dfa_ray.models import resnet  # noqa: F401  isort: skip
from dfa_ray.models import resnet50  # noqa: F401  isort: skip
from dfa_ray.models import wrn  # noqa: F401  isort: skip
from dfa_ray.models import vgg  # noqa: F401  isort: skip
from dfa_ray.models import mobilenetv2  # noqa: F401  isort: skip
from dfa_ray.models import shufflenetv1  # noqa: F401  isort: skip
from dfa_ray.models import shufflenetv2  # noqa: F401  isort: skip

__all__ = ["MODELS", "GroupInfo", "GroupedModel", "create_model", "model_summary"]
