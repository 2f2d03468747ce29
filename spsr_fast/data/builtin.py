"""Built-in image sources: photographs that ship inside a declared dependency, so the training
demo (configs/tiny_cpu.yaml) runs on a fresh clone with no download and no data folder.

A config or a dataset names one as `builtin:NAME` wherever it takes an HR image folder
(`data.train_hr`, `data.val_hr`, `spsr-fast eval`); it resolves to a fixed list of files and
then goes through the same datasets as a folder (crops, flips, on-the-fly MATLAB bicubic LR,
val_crop).

The source is scikit-image's sample data: its wheel bundles a few photographs in
`skimage/data/` (the rest of `skimage.data` is downloaded on demand by pooch; none of those is
used here). The split is fixed (chosen before the demo was tuned) and disjoint:

- `skimage-val`: chelsea (a cat: fur, whiskers), coffee (a cup on a table: smooth shading,
  sharp rims) and grass (a grayscale texture, the hardest case), never trained on.
- `skimage-train`: the other natural photographs of the wheel. Colour: astronaut, rocket,
  motorcycle_left (of the stereo pair only the left view: the right one is the same scene)
  and immunohistochemistry (a stained-tissue micrograph, kept for its colour texture).
  Grayscale (read as R = G = B; they add texture the colour ones lack, and validation is on
  Y): camera, brick, gravel, coins, moon.
- Left out: synthetic images (checkerboard, colorwheel, logo, phantom, horse), document scans
  (page, text), the motion-blurred clock (a blurred HR teaches blur), the small micrographs
  cell and microaneurysms, and the large, mostly dark retina and hubble_deep_field (most
  random crops would be flat black).
"""
from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

PREFIX = "builtin:"


class BuiltinSourceError(ValueError):
    """An unknown built-in source, or one whose package or files are missing; one-line message."""


@dataclass(frozen=True)
class BuiltinSource:
    package: str            # the importable package that holds the files
    install: str            # what to pip install when it is missing
    files: tuple[str, ...]  # file names inside `package`
    what: str               # one line for error messages and listings


_SKIMAGE = dict(package="skimage.data", install="scikit-image")

SOURCES: dict[str, BuiltinSource] = {
    "skimage-train": BuiltinSource(
        **_SKIMAGE, what="9 photographs bundled with scikit-image (4 colour, 5 grayscale)",
        files=("astronaut.png", "rocket.jpg", "motorcycle_left.png", "ihc.png",
               "camera.png", "brick.png", "gravel.png", "coins.png", "moon.png")),
    "skimage-val": BuiltinSource(
        **_SKIMAGE, what="3 held-out photographs bundled with scikit-image (chelsea, coffee, grass)",
        files=("chelsea.png", "coffee.png", "grass.png")),
}


def is_builtin(entry) -> bool:
    return isinstance(entry, str) and entry.startswith(PREFIX)


def known_names() -> str:
    return ", ".join(PREFIX + name for name in SOURCES)


def lookup(entry: str) -> BuiltinSource:
    """The source `entry` (`builtin:NAME`) names; BuiltinSourceError listing the known ones."""
    name = entry[len(PREFIX):] if is_builtin(entry) else entry
    if name not in SOURCES:
        raise BuiltinSourceError(f"unknown built-in image source {entry!r} (known: {known_names()})")
    return SOURCES[name]


def builtin_paths(entry: str) -> list[str]:
    """The files of the source `entry`, in their fixed order; every one checked to exist."""
    source = lookup(entry)
    try:
        root = importlib.resources.files(source.package)
    except ModuleNotFoundError:
        raise BuiltinSourceError(f"{entry} needs {source.install}: pip install {source.install}") from None
    paths = [root / name for name in source.files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise BuiltinSourceError(f"{entry}: {source.package} does not bundle {', '.join(missing)} "
                                 f"(looked in {root}); reinstall {source.install}")
    return [str(p) for p in paths]
