"""How well an NSE captures structure: the paper's Fig. 15 protocol (section 5.2, appendix B.2).

- Contrastive top-1: test images are cut densely into patches (200 px: a 50x50 map, ~2,000
  negatives per positive, as the paper); on each map random targets are predicted from their
  context by a predictor and scored right when the positive is strictly the most cosine-similar
  of {positive} u negatives. Repeated (10 times) with fresh targets: mean +- std over repeats.
- Jigsaw accuracy: random 2x2 grids of features on the same maps, shuffled by a random one of
  the 24 permutations, classified by a jigsaw head.
- Cross-evaluation: an NSE is frozen and a fresh head is trained for a task it was not trained
  on (random crops of the training images); a randomly initialised NSE gets fresh heads for both.

    python -m spsr_fast.eval_nse --train TRAIN_DIR --test TEST_DIR \
        --nse contrastive=runs/nse_c/checkpoints/step_00001500.pt --nse jigsaw=... --random-init
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..data.images import list_images, read_image
from ..models import NSE
from .checkpoint import TrainedNSE, load_trained_nse, make_head
from .sampling import ContrastiveGeometry, JigsawGeometry, gather_cells, shuffle_pieces
from .tasks import contrastive_task, contrastive_top1, jigsaw_task

TASKS = ("contrastive", "jigsaw")
JIGSAW_CHANCE = 1 / 24


@dataclass
class Score:
    mean: float
    std: float
    chance: float
    head: str            # "own" (trained with the NSE) or "fresh" (trained here on the frozen NSE)

    def text(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f} % ({self.head} head)"


def read_folder(folder: str, limit: int = 0) -> list[np.ndarray]:
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"no images in {folder}")
    if limit and len(paths) > limit:  # an even spread over the folder, not its first files
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    return [read_image(p) for p in paths]


def dense_patches(images: list[np.ndarray], size: int, max_patches: int = 0) -> torch.Tensor:
    """Non-overlapping size x size tiles covering each image (P, 3, size, size)."""
    tiles = [img[y:y + size, x:x + size]
             for img in images
             for y in range(0, img.shape[0] - size + 1, size)
             for x in range(0, img.shape[1] - size + 1, size)]
    if not tiles:
        raise ValueError(f"every test image is smaller than the {size}px evaluation patch")
    if max_patches and len(tiles) > max_patches:  # an even spread, not the first images only
        tiles = [tiles[i] for i in np.linspace(0, len(tiles) - 1, max_patches).round().astype(int)]
    return torch.from_numpy(np.stack(tiles).transpose(0, 3, 1, 2).copy())


def random_crops(images: list[np.ndarray], size: int, count: int, rng: np.random.Generator) -> torch.Tensor:
    crops = []
    for _ in range(count):
        img = images[int(rng.integers(len(images)))]
        y = int(rng.integers(0, img.shape[0] - size + 1))
        x = int(rng.integers(0, img.shape[1] - size + 1))
        crops.append(img[y:y + size, x:x + size])
    return torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).copy())


@torch.no_grad()
def feature_maps(nse: nn.Module, patches: torch.Tensor, batch: int = 16) -> torch.Tensor:
    nse.eval()
    return torch.cat([nse(patches[i:i + batch]) for i in range(0, len(patches), batch)])


@dataclass
class Outcomes:
    """Every evaluated sample of one accuracy: what the mean, its spread over repeats and its
    standard error are computed from."""
    correct: torch.Tensor       # (N,) bool: top-1 right
    chance: torch.Tensor        # (N,) accuracy of a random guess for each sample
    map_index: torch.Tensor     # (N,) the test patch each sample was drawn on
    repeat: torch.Tensor        # (N,) the repeat each sample belongs to

    def summary(self) -> tuple[float, float, float]:
        """(mean, std over repeats, chance) of the accuracy."""
        accs = [self.correct[self.repeat == r].float().mean().item() for r in self.repeat.unique().tolist()]
        return float(np.mean(accs)), float(np.std(accs)), self.chance.float().mean().item()


def _repeat(score_once, repeats: int, seed: int) -> Outcomes:
    """`repeats` rounds of score_once(generator) -> (correct, chance, map_index), fresh samples each."""
    rounds = [score_once(torch.Generator().manual_seed(seed + r)) for r in range(repeats)]
    correct, chance, map_index = (torch.cat([x[k].cpu() for x in rounds]) for k in range(3))
    repeat = torch.cat([torch.full((len(x[0]),), r) for r, x in enumerate(rounds)])
    return Outcomes(correct, chance, map_index, repeat)


@torch.no_grad()
def contrastive_outcomes(maps: torch.Tensor, predictor: nn.Module, geometry: ContrastiveGeometry,
                         repeats: int = 10, per_map: int = 4, seed: int = 0) -> Outcomes:
    """Top-1 of `repeats` rounds of `per_map` random targets per map, sample by sample."""
    predictor.eval()
    B, _, H, W = maps.shape

    def once(gen):
        sample = geometry.sample(B, H, W, per_map, gen)
        queries = predictor(gather_cells(maps, sample.image_index, sample.context))
        correct, candidates = contrastive_top1(queries, maps, sample, geometry.radius)
        return correct, 1.0 / candidates.float(), sample.image_index

    return _repeat(once, repeats, seed)


def contrastive_accuracy(maps: torch.Tensor, predictor: nn.Module, geometry: ContrastiveGeometry,
                         repeats: int = 10, per_map: int = 4, seed: int = 0) -> tuple[float, float, float]:
    """(mean, std, chance) of top-1 over `repeats` rounds of `per_map` random targets per map."""
    return contrastive_outcomes(maps, predictor, geometry, repeats, per_map, seed).summary()


@torch.no_grad()
def jigsaw_outcomes(maps: torch.Tensor, head: nn.Module, geometry: JigsawGeometry, repeats: int = 10,
                    per_map: int = 4, seed: int = 0) -> Outcomes:
    """Permutation classified right or not, for `repeats` rounds of `per_map` puzzles per map."""
    head.eval()
    B, _, H, W = maps.shape

    def once(gen):
        sample = geometry.sample(B, H, W, per_map, gen)
        logits = head(shuffle_pieces(gather_cells(maps, sample.image_index, sample.cells), sample.labels))
        correct = logits.argmax(dim=1) == sample.labels.to(logits.device)
        return correct, torch.full((len(correct),), JIGSAW_CHANCE), sample.image_index

    return _repeat(once, repeats, seed)


def jigsaw_accuracy(maps: torch.Tensor, head: nn.Module, geometry: JigsawGeometry, repeats: int = 10,
                    per_map: int = 4, seed: int = 0) -> tuple[float, float, float]:
    return jigsaw_outcomes(maps, head, geometry, repeats, per_map, seed).summary()


def train_head(nse: nn.Module, task: str, images: list[np.ndarray], steps: int = 300, crop: int = 128,
               batch: int = 8, per_image: int = 32, lr: float = 1e-3, strategy: str = "h",
               hidden: int = 256, seed: int = 0, head: nn.Module | None = None) -> nn.Module:
    """A fresh head for `task`, trained on random crops of `images` with the NSE frozen.

    `head`: start from these weights (trained in place) instead of a new random head, e.g. the
    initial head of an NSE pre-training run, so that a control differs from that run only in
    the NSE staying frozen."""
    channels = nse.config["out_channels"]
    if head is None:
        head = make_head(task, channels, hidden, strategy)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    head.train()
    for step in range(steps):
        maps = feature_maps(nse, random_crops(images, crop, batch, rng), batch)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        if task == "contrastive":
            out = contrastive_task(maps, head, ContrastiveGeometry(strategy), per_image, gen, score_rows=0)
        else:
            out = jigsaw_task(maps, head, JigsawGeometry(), per_image, gen)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
    return head.eval()


def evaluate(models: dict[str, TrainedNSE], train_images: list[np.ndarray], test_patches: torch.Tensor,
             strategy: str = "h", repeats: int = 10, per_map: int = 4, head_steps: int = 300,
             fresh_heads: bool = False, log=print) -> dict[str, dict[str, Score]]:
    """Scores of every NSE on both tasks (own head where it has one, unless fresh_heads)."""
    results: dict[str, dict[str, Score]] = {}
    for name, trained in models.items():
        t0 = time.perf_counter()
        maps = feature_maps(trained.nse, test_patches)
        results[name] = {}
        for task in TASKS:
            own = trained.task == task and trained.head is not None and not fresh_heads
            task_strategy = (trained.strategy or strategy) if own else strategy
            head = trained.head if own else train_head(trained.nse, task, train_images, head_steps,
                                                       strategy=task_strategy)
            if task == "contrastive":
                mean, std, chance = contrastive_accuracy(maps, head, ContrastiveGeometry(task_strategy), repeats,
                                                         per_map)
            else:
                mean, std, chance = jigsaw_accuracy(maps, head, JigsawGeometry(), repeats, per_map)
            results[name][task] = Score(mean, std, chance, "own" if own else "fresh")
        log(f"{name}: evaluated in {time.perf_counter() - t0:.0f} s")
    return results


def format_table(results: dict[str, dict[str, Score]], num_patches: int, map_size: tuple[int, int]) -> str:
    contrastive_chance = next(iter(results.values()))["contrastive"].chance
    lines = [f"NSE evaluation on {num_patches} unseen {map_size[0] * 4}px patches "
             f"({map_size[0]}x{map_size[1]} feature maps), mean ± std over repeats",
             "",
             f"| NSE | contrastive top-1 (chance {100 * contrastive_chance:.3f} %) | "
             f"jigsaw accuracy (chance {100 * JIGSAW_CHANCE:.2f} %) |",
             "|---|---|---|"]
    for name, scores in results.items():
        lines.append(f"| {name} | {scores['contrastive'].text()} | {scores['jigsaw'].text()} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spsr_fast.eval_nse", description=__doc__.splitlines()[0])
    parser.add_argument("--nse", action="append", default=[], metavar="NAME=PATH",
                        help="an NSE to evaluate: nse_* trainer checkpoint (.pt) or NSE .safetensors (repeatable)")
    parser.add_argument("--random-init", action="store_true", help="also evaluate a randomly initialised NSE")
    parser.add_argument("--train", required=True, help="folder of training images (for fresh heads)")
    parser.add_argument("--train-limit", type=int, default=64, help="read at most this many training images")
    parser.add_argument("--test", required=True, help="folder of unseen test images")
    parser.add_argument("--patch", type=int, default=200, help="test patch size in px (200: ~2,000 negatives)")
    parser.add_argument("--max-patches", type=int, default=0, help="use at most this many test patches")
    parser.add_argument("--strategy", default="h", choices=("h", "v", "cross"),
                        help="contrastive sampling for fresh predictors (default h, as Fig. 15)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--per-map", type=int, default=4, help="targets / puzzles per patch and repeat")
    parser.add_argument("--head-steps", type=int, default=300, help="training steps of each fresh head")
    parser.add_argument("--fresh-heads", action="store_true", help="train fresh heads even for an NSE's own task")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    if not args.nse and not args.random_init:
        parser.error("give at least one --nse NAME=PATH or --random-init")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    models: dict[str, TrainedNSE] = {}
    for spec in args.nse:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"--nse: expected NAME=PATH, got {spec!r}")
        models[name] = load_trained_nse(path)
    if args.random_init:
        width = channels = None
        if models:  # the same architecture as the trained ones
            first = next(iter(models.values())).nse.config
            width, channels = first["width"], first["out_channels"]
        models["random init"] = TrainedNSE(NSE(width=width or 64, out_channels=channels or 32).eval(),
                                           source="random")
    train_images = read_folder(args.train, args.train_limit)
    patches = dense_patches(read_folder(args.test), args.patch, args.max_patches)
    results = evaluate(models, train_images, patches, args.strategy, args.repeats, args.per_map, args.head_steps,
                       args.fresh_heads, log=lambda s: print(s, file=sys.stderr))
    map_size = (math.ceil(args.patch / 4), math.ceil(args.patch / 4))
    print(format_table(results, len(patches), map_size))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({k: {t: asdict(s) for t, s in v.items()} for k, v in results.items()}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
