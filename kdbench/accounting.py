"""What a phase cost on the machine: peak resident memory, and on CUDA the GPU time and peak GPU memory.

Every stage (training, profiling, cache build, generation) reports through these, so the runtime table
compares like with like."""

from __future__ import annotations

import resource

import torch


def peak_rss_mb() -> float:
    """Largest resident set of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class GpuClock:
    """CUDA time between ``start()`` and ``stop()`` (events on the device's stream, so kernels still queued
    count) and the peak GPU memory allocated meanwhile. On a CPU device both calls do nothing and
    ``stop()`` returns {}."""

    def __init__(self, device: torch.device):
        self.device = device
        self.events = None

    def start(self) -> "GpuClock":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self.events[0].record()
        return self

    def stop(self) -> dict[str, float]:
        if self.events is None:
            return {}
        self.events[1].record()
        torch.cuda.synchronize(self.device)
        return {"cuda_time_s": self.events[0].elapsed_time(self.events[1]) / 1000.0,
                "cuda_peak_memory_mb": torch.cuda.max_memory_allocated(self.device) / 2**20}
