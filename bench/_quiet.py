"""Imported by the bench scripts before torch. The CPU peak-memory measurement runs
torch.profiler; its Kineto backend logs a `USDT ... profiler_start/stop` line at every run
and, without a GPU, an `ERROR ... gpuGetDeviceCount failed`, and c10's profiled CPU allocator
logs a warning when a block allocated before a run is freed inside it (which the measurement
accounts for: bench/_harness.py). None of it concerns the reader; Python warnings still show.
Set the variables yourself to see the logs again."""
import os

os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # above Kineto's highest level (USDT, 5): silent
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # c10's C++ LOG(WARNING) lines; read when torch loads
