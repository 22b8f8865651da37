"""Retain / forget splits: which training examples the model must forget.

One small type, :class:`ForgetSplit`, built by class label, by a boolean mask (an attribute such as
CelebA's ``Male``), or by sample ids. Every constructor refuses an empty forget or retain set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from genunlearn.errors import DataError


@dataclass(frozen=True)
class ForgetSplit:
    """Indices into a dataset, partitioned into what is retained and what is forgotten.

    Attributes:
        retain: int64 indices of the retain set.
        forget: int64 indices of the forget set.
        description: human-readable description (``"class 1"``), recorded with runs.
    """

    retain: torch.Tensor
    forget: torch.Tensor
    description: str

    def __post_init__(self) -> None:
        if self.forget.numel() == 0:
            raise DataError(f"empty forget set ({self.description})")
        if self.retain.numel() == 0:
            raise DataError(f"empty retain set ({self.description}): nothing would be left to keep")

    @classmethod
    def by_mask(cls, forget_mask: torch.Tensor, description: str = "mask") -> ForgetSplit:
        """Forget the examples where ``forget_mask`` is true."""
        mask = torch.as_tensor(forget_mask, dtype=torch.bool).reshape(-1)
        idx = torch.arange(mask.numel())
        return cls(retain=idx[~mask], forget=idx[mask], description=description)

    @classmethod
    def by_class(
        cls, labels: torch.Tensor, forget_classes: int | Iterable[int], *, num_classes: int | None = None
    ) -> ForgetSplit:
        """Forget every example whose label is in ``forget_classes``.

        Raises:
            DataError: if a requested class does not occur in ``labels`` (or is outside ``num_classes``).

        >>> s = ForgetSplit.by_class(torch.tensor([0, 1, 1, 2]), 1)
        >>> s.forget.tolist(), s.retain.tolist()
        ([1, 2], [0, 3])
        """
        classes = [forget_classes] if isinstance(forget_classes, int) else list(forget_classes)
        if not classes:
            raise DataError("no forget class given")
        labels = torch.as_tensor(labels).reshape(-1)
        present = set(torch.unique(labels).tolist())
        for c in classes:
            if (num_classes is not None and not 0 <= c < num_classes) or c not in present:
                raise DataError(f"forget class {c} does not exist in the data (classes: {sorted(present)})")
        mask = torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))
        return cls.by_mask(mask, description="class " + ",".join(str(c) for c in classes))

    @classmethod
    def by_ids(cls, num_examples: int, forget_ids: Sequence[int]) -> ForgetSplit:
        """Forget specific examples by their index in the dataset."""
        ids = torch.as_tensor(list(forget_ids), dtype=torch.int64)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_examples):
            raise DataError(f"sample ids must lie in [0, {num_examples}); got {ids.min()}..{ids.max()}")
        mask = torch.zeros(num_examples, dtype=torch.bool)
        mask[ids] = True
        return cls.by_mask(mask, description=f"{ids.numel()} sample ids")
