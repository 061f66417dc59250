"""Each task's LoRA recipe: rank, target modules, epochs, learning rate (ranks spread over {8,16,32,64}).

The small adapters (<= ~5 MB in fp16) ship in assets/adapters/; the larger ones are rebuilt by
`python -m inlaid_worker.train.all` (assets/adapters/.gitignore lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_LINEAR = ATTENTION + ("gate_proj", "up_proj", "down_proj")
QV = ("q_proj", "v_proj")


@dataclass(frozen=True)
class Recipe:
    rank: int
    targets: tuple[str, ...]
    epochs: int
    lr: float
    alpha_over_rank: float = 2.0
    dropout: float = 0.05
    batch_size: int = 16
    max_len: int = 768
    shipped: bool = True  # committed to the repository (small) or rebuilt by the command
    balance: bool = False  # downsample training examples so every target label is equally frequent

    @property
    def alpha(self) -> int:
        return int(self.rank * self.alpha_over_rank)


RECIPES: dict[str, Recipe] = {
    "boolq": Recipe(8, ATTENTION, 4, 5e-4, balance=True),
    "csqa": Recipe(16, QV, 4, 5e-4),
    "nq_open": Recipe(16, ATTENTION, 3, 5e-4),
    "asdiv": Recipe(8, ALL_LINEAR, 4, 5e-4),
    "en_es": Recipe(32, ATTENTION, 3, 3e-4, shipped=False),
    "xsum": Recipe(64, ATTENTION, 2, 2e-4, shipped=False),
    "humaneval": Recipe(16, ALL_LINEAR, 6, 3e-4, batch_size=8, shipped=False),
}


def get_recipe(
    task: str, rank: int | None = None, epochs: int | None = None, lr: float | None = None
) -> Recipe:
    if task not in RECIPES:
        raise ValueError(f"no LoRA recipe for task {task!r}; known: {', '.join(RECIPES)}")
    r = RECIPES[task]
    if rank is not None:
        if rank <= 0:
            raise ValueError(f"rank must be positive, got {rank}")
        r = replace(r, rank=rank)
    if epochs is not None:
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        r = replace(r, epochs=epochs)
    if lr is not None:
        r = replace(r, lr=lr)
    return r
