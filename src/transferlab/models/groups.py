"""Layer groups from input to output, for training only the top N of them.

The groups come from each architecture's own metadata, timm's ``group_matcher(coarse=True)``
(stem, then one group per stage or block), which transferlab's custom CNNs and torchvision
wrappers provide too. Parameters a matcher leaves out (timm puts e.g. a final norm or
``conv_head`` there) form a group after the blocks; the classifier (``get_classifier()``,
whatever head replaced it) is always the last group. Models without a ``group_matcher``
fall back to one group per top-level child module, in definition order.
"""

from __future__ import annotations

import logging

from timm.models import group_parameters
from torch import nn

from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the classifier's parameters (``model.get_classifier()``), in model order."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Module):
        return []
    prefix = next((n for n, m in model.named_modules() if m is head), None)
    if prefix is None:
        return []
    if prefix == "":
        return [n for n, _ in model.named_parameters()]
    return [n for n, _ in model.named_parameters() if n.startswith(prefix + ".")]


def _by_children(model: nn.Module) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        groups.setdefault(name.split(".", 1)[0], []).append(name)
    return list(groups.values())


def body_groups(model: nn.Module) -> list[list[str]]:
    """The groups before the head, input first (see the module docstring)."""
    head = set(head_parameter_names(model))
    matcher = getattr(model, "group_matcher", None)
    if callable(matcher):
        grouped = group_parameters(model, matcher(coarse=True))
        ordered = [grouped[k] for k in sorted(grouped)]
    else:
        logger.debug("%s has no group_matcher; grouping by child module", type(model).__name__)
        ordered = _by_children(model)
    body = [[n for n in group if n not in head] for group in ordered]
    return [g for g in body if g]


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names in ordered groups: stem, each stage/block group, ..., head last.

    Every parameter is in exactly one group. The head group is left out only when the
    classifier has no parameters (``num_classes=0``).
    """
    head = head_parameter_names(model)
    return [*body_groups(model), *([head] if head else [])]


def check_top_n(model: nn.Module, n: int) -> None:
    """``--trainable-groups n`` must name 1 .. the model's layer groups below the head.

    Cheap once the model is built: call it before anything is written to a run folder.
    """
    count = len(body_groups(model))
    if not 1 <= n <= count:
        raise ConfigError(
            f"--trainable-groups {n} is out of range: {type(model).__name__} has {count} layer "
            f"groups below the head; use 1..{count} (--strategy linear-probe trains the head alone)"
        )


def trainable_for_top_n(model: nn.Module, n: int) -> set[str]:
    """Parameter names of the last ``n`` groups before the head, plus the head.

    ``n=0`` is the head alone (a linear probe, as the engine plans it); ``n`` equal to the
    number of body groups is the whole network. Another ``n`` is the user's
    ``--trainable-groups``, reported as :func:`check_top_n` does.
    """
    body = body_groups(model)
    if n != 0:
        check_top_n(model, n)
    chosen = body[len(body) - n :] if n else []
    return {name for group in chosen for name in group} | set(head_parameter_names(model))
