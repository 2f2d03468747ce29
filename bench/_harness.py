"""Timing, peak-memory and reporting helpers shared by the benchmarks in bench/.

Every benchmark runs its reference and fused variants in one process and reports
records {op, backend, device, dtype, shape, pass, ms_median, peak_bytes,
speedup_vs_reference} (plus optional extra fields)."""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: str, min_time_s: float = 0.4, max_reps: int = 200,
            warmup: int = 3, slow_s: float = 2.0) -> float:
    """Median wall time of fn() in milliseconds, after warm-up, synchronising the GPU.
    Warm-up: `warmup` calls, fewer when they add up to over 0.5 s (at least one). Samples: at
    least 5 and min_time_s, or 3 once they take slow_s (seconds-long passes on the CPU)."""
    start_warmup = time.perf_counter()
    for _ in range(warmup):
        fn()
        synchronize(device)
        if time.perf_counter() - start_warmup > 0.5:
            break
    samples: list[float] = []
    start_all = time.perf_counter()

    def enough() -> bool:
        elapsed = time.perf_counter() - start_all
        return len(samples) >= max_reps or (len(samples) >= 5 and elapsed >= min_time_s) or (
            len(samples) >= 3 and elapsed >= slow_s)

    while not enough():
        if device == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def on_backend(name: str, fn: Callable) -> Callable:
    """fn(*args) run under spsr_fast.ops.backend(name)."""
    from spsr_fast.ops import backend

    def run(*args, **kwargs):
        with backend(name):
            return fn(*args, **kwargs)
    return run


def with_env(variable: str, value: str, fn: Callable) -> Callable:
    """fn(*args) run with os.environ[variable] = value (restored after)."""
    def run(*args, **kwargs):
        old = os.environ.get(variable)
        os.environ[variable] = value
        try:
            return fn(*args, **kwargs)
        finally:
            if old is None:
                del os.environ[variable]
            else:
                os.environ[variable] = old
    return run


def without_grad(fn: Callable[[], object]) -> Callable[[], object]:
    """fn() run under torch.no_grad() (inference timings)."""
    def run():
        with torch.no_grad():
            return fn()
    return run


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes that fn() allocates on the CPU allocator.

    Replays the profiler's allocation events in time order, counting a free only when its
    block was allocated inside fn (frees of older blocks, like a previous `.grad`, don't
    lower it). The events come from the profiler's event tree, not an exported trace."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    pending = list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        node = pending.pop()
        pending.extend(node.children)
        if node.typed[0] == _EventType.Allocation and node.typed[1].device.type == "cpu":
            events.append((node.start_time_ns, node.typed[1].ptr, node.typed[1].alloc_size))
    live: dict[int, int] = {}
    current = peak = 0
    for _, address, size in sorted(events, key=lambda e: e[0]):
        if size > 0:
            live[address] = size
            current += size
            peak = max(peak, current)
        elif address in live:
            current -= live.pop(address)
    return peak


def peak_bytes(fn: Callable[[], object], device: str) -> int:
    """Extra memory fn() needs at its peak (GPU: caching allocator stats)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    return _cpu_peak_bytes(fn)


@dataclass
class Record:
    op: str
    backend: str
    device: str
    dtype: str
    shape: str
    pass_: str
    ms_median: float
    peak_bytes: int
    speedup_vs_reference: float | None = None
    extra: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        out = {"op": self.op, "backend": self.backend, "device": self.device, "dtype": self.dtype,
               "shape": self.shape, "pass": self.pass_, "ms_median": round(self.ms_median, 5),
               "peak_bytes": int(self.peak_bytes),
               "speedup_vs_reference": None if self.speedup_vs_reference is None
               else round(self.speedup_vs_reference, 3)}
        out.update(self.extra)
        return out


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_table(records: list[Record], extra_columns: tuple[str, ...] = ()) -> None:
    header = ["op", "shape", "dtype", "pass", "backend", "ms", "peak", "x ref"] + list(extra_columns)
    rows = []
    for r in records:
        rows.append([r.op, r.shape, r.dtype, r.pass_, r.backend, f"{r.ms_median:.3f}",
                     format_bytes(r.peak_bytes),
                     "-" if r.speedup_vs_reference is None else f"{r.speedup_vs_reference:.2f}"]
                    + [str(r.extra.get(c, "")) for c in extra_columns])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def copy_bandwidth_gbps(device: str) -> float | None:
    """Measured device copy bandwidth (read + write bytes per second) on a 1 GiB buffer."""
    if device != "cuda":
        return None
    src = torch.empty(256 * 1024 * 1024, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, min_time_s=0.3)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


@dataclass
class Case:
    """One benchmark case: for each pass ("fwd", "fwd+bwd"), a callable per backend.

    `reference` names the backend that speedup_vs_reference divides by; `compare_to`
    names a second baseline whose ratio is reported as `speedup_vs_<name>`;
    `bytes_moved[pass]` enables achieved-bandwidth columns on the GPU, `flops[pass]` the
    achieved TFLOP/s column."""

    op: str
    shape: str
    dtype: torch.dtype
    variants: dict[str, dict[str, Callable[[], object]]]
    reference: str
    compare_to: str | None = None
    bytes_moved: dict[str, int] | None = None
    flops: dict[str, int] | None = None


def run_case(case: Case, device: str, copy_gbps: float | None, measure_memory: bool = True,
             progress: Callable[[str], None] | None = None,
             on_record: Callable[[Record], None] | None = None) -> list[Record]:
    """Times (and measures the memory of) every variant of every pass of `case`, the reference
    and comparison baselines first. `progress` gets one line per pass before it runs,
    `on_record` each record as soon as it exists (a time-boxed run keeps what it measured)."""
    records = []
    for pass_, fns in case.variants.items():
        if progress:
            progress(f"{case.op} {case.shape} {dtype_name(case.dtype)} {pass_}: {', '.join(fns)}")
        baselines = [name for name in (case.reference, case.compare_to) if name in fns]
        timings: dict[str, float] = {}
        for name in baselines + [name for name in fns if name not in baselines]:
            fn = fns[name]
            timings[name] = time_ms(fn, device)
            extra = {}
            if case.compare_to in timings and name != case.compare_to:
                extra[f"speedup_vs_{case.compare_to}"] = round(timings[case.compare_to] / timings[name], 3)
            if device == "cuda" and case.bytes_moved and pass_ in case.bytes_moved:
                gbps = case.bytes_moved[pass_] / (timings[name] * 1e-3) / 1e9
                extra["GB/s"] = round(gbps, 1)
                if copy_gbps:
                    extra["%copy_bw"] = round(100 * gbps / copy_gbps, 1)
            if case.flops and pass_ in case.flops:
                extra["TFLOP/s"] = round(case.flops[pass_] / (timings[name] * 1e-3) / 1e12, 3)
            ref_ms = timings.get(case.reference)
            records.append(Record(
                op=case.op, backend=name, device=device, dtype=dtype_name(case.dtype),
                shape=case.shape, pass_=pass_, ms_median=timings[name],
                peak_bytes=peak_bytes(fn, device) if measure_memory else 0,
                speedup_vs_reference=None if ref_ms is None else ref_ms / timings[name],
                extra=extra))
            if on_record:
                on_record(records[-1])
    return records
