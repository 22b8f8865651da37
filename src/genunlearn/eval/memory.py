"""Peak memory of live tensors during one call (what a step needs, independent of the C allocator)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def peak_live_tensor_bytes(step: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak bytes of live tensors while ``step()`` runs.

    CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before. CPU: the profiler's memory
    timeline (every allocation and free of the tensor allocator), which counts what the tensors need
    regardless of how the C allocator returns memory to the system (the resident set does not).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = step()
        torch.cuda.synchronize(device)
        del out
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline  # private, but the only CPU tool

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        out = step()
        del out
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
    return int(max(sum(row) for row in sizes))
