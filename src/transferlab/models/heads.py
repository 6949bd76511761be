"""Classifier heads: timm's linear layer, or an MLP (the Stanford Cars / flowers heads)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class HeadSpec:
    kind: str = "linear"  # linear | mlp
    hidden_units: tuple[int, ...] = ()
    dropout: float = 0.5
    batch_norm: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hidden_units": list(self.hidden_units)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> HeadSpec:
        if not raw:
            return cls()
        return cls(
            kind=str(raw.get("kind", "linear")),
            hidden_units=tuple(int(h) for h in raw.get("hidden_units", ())),
            dropout=float(raw.get("dropout", 0.5)),
            batch_norm=bool(raw.get("batch_norm", True)),
        )


def mlp_head(
    in_features: int, num_classes: int, hidden: Sequence[int], dropout: float, batch_norm: bool
) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def install_head(model: nn.Module, spec: HeadSpec, num_classes: int) -> None:
    """Replace ``model``'s classifier module in place when the spec asks for an MLP."""
    if spec.kind == "linear":
        return
    current = model.get_classifier()  # type: ignore[operator]
    # The width the classifier sees; hidden FC layers (AlexNet, VGG) sit before it.
    if isinstance(current, nn.Linear):
        in_features = current.in_features
    else:
        width: int = getattr(model, "head_hidden_size", 0) or getattr(model, "num_features", 0)
        in_features = int(width)
    head = mlp_head(in_features, num_classes, spec.hidden_units, spec.dropout, spec.batch_norm)
    name = next(n for n, m in model.named_modules() if m is current)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], head)
