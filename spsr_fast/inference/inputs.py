"""Which files an `upscale` run reads, and where each result goes.

Arguments are files, folders (their images; recursive on request) or glob patterns.
A missing path or a pattern matching nothing is a failure reported by name, not an
abort. Results go next to their input with a suffix, or into an output folder (keeping
the layout below a folder argument). A result never lands on an input file, and two
inputs never share one result path; the same holds for a job's companion file (the
gradient map `<name>_grad.png`).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from .io import EXTENSION_BY_FORMAT, FORMAT_BY_EXTENSION, is_image_path

GLOB_CHARS = set("*?[")
GRADIENT_SUFFIX = "_grad.png"


@dataclass
class Job:
    source: str
    output: str | None
    error: str | None = None  # set when the job cannot run; reported by source path
    gradient_output: str | None = None  # <output stem>_grad.png, when gradient maps are saved

    @property
    def outputs(self) -> list[str]:
        return [p for p in (self.output, self.gradient_output) if p is not None]


def gradient_path(output: str) -> str:
    return os.path.splitext(output)[0] + GRADIENT_SUFFIX


def _folder_images(folder: str, recursive: bool) -> list[str]:
    if recursive:
        found = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    else:
        found = [os.path.join(folder, name) for name in os.listdir(folder)]
    return sorted(p for p in found if os.path.isfile(p) and is_image_path(p))


def expand_inputs(arguments: list[str], recursive: bool) -> list[tuple[str, str | None, str | None]]:
    """(path, base folder or None, error or None) per input, in argument order, deduplicated."""
    found: list[tuple[str, str | None, str | None]] = []
    for argument in arguments:
        if os.path.isdir(argument):
            images = _folder_images(argument, recursive)
            if not images:
                found.append((argument, None, "folder holds no images" + ("" if recursive else
                                                                          " (use --recursive for subfolders)")))
            found.extend((p, argument, None) for p in images)
        elif os.path.exists(argument):
            found.append((argument, None, None))
        elif GLOB_CHARS & set(argument):
            matches = sorted(p for p in glob.glob(argument, recursive=True) if os.path.isfile(p) and is_image_path(p))
            found.extend((p, None, None) for p in matches)
            if not matches:
                found.append((argument, None, "pattern matches no image files"))
        else:
            found.append((argument, None, "no such file or folder"))
    seen, unique = set(), []
    for path, base, error in found:
        key = os.path.realpath(path)
        if error is None and key in seen:
            continue
        seen.add(key)
        unique.append((path, base, error))
    return unique


def output_path(source: str, base: str | None, out_dir: str | None, suffix: str, fmt: str | None) -> str:
    stem, ext = os.path.splitext(os.path.basename(source))
    if fmt is not None:
        ext = EXTENSION_BY_FORMAT[fmt]
    elif ext.lower() not in FORMAT_BY_EXTENSION:
        ext = ".png"
    name = f"{stem}{suffix}{ext}"
    if out_dir is None:
        return os.path.join(os.path.dirname(source), name)
    if base is not None:
        relative = os.path.relpath(os.path.dirname(os.path.abspath(source)), os.path.abspath(base))
        return os.path.normpath(os.path.join(out_dir, relative, name))
    return os.path.join(out_dir, name)


def _conflict(target: str, protected: set[str], claimed: dict[str, str]) -> str | None:
    key = os.path.realpath(target)
    if key in protected:
        return f"output {target} would replace an input image (choose another --suffix or -o folder)"
    if key in claimed:
        return f"output {target} is already an output of {claimed[key]}"
    return None


def plan_jobs(arguments: list[str], out_dir: str | None, suffix: str, fmt: str | None,
              recursive: bool, gradient_maps: bool = False) -> list[Job]:
    """One job per input; `gradient_maps` gives each job its `_grad.png` companion too."""
    inputs = expand_inputs(arguments, recursive)
    protected = {os.path.realpath(p) for p, _, error in inputs if error is None}
    claimed: dict[str, str] = {}
    jobs = []
    for source, base, error in inputs:
        if error is not None:
            jobs.append(Job(source, None, error))
            continue
        target = output_path(source, base, out_dir, suffix, fmt)
        job = Job(source, target, gradient_output=gradient_path(target) if gradient_maps else None)
        for path in job.outputs:
            job.error = job.error or _conflict(path, protected, claimed)
        if job.error is None:
            claimed.update((os.path.realpath(path), source) for path in job.outputs)
        jobs.append(job)
    return jobs
