"""The optimisation loop both trainers share: AdamW, linear warm-up/decay, a time budget, best-checkpoint keeping.

Why our own loop rather than sentence-transformers 6's ``CrossEncoderTrainer`` / ``SentenceTransformerTrainer``:
a wall-clock budget that re-plans the learning-rate schedule to decay within it (the quickstart and ``adapt``
train "for N minutes"; the Trainer can only be stopped, leaving the rate high), and negatives redrawn from each
query's mined pool every epoch (the Trainer takes a fixed data set). A per-group learning rate for the new
scoring head is not a reason: the Trainer has ``learning_rate_mapping``. ``bench/compare_trainers.py`` runs both
on the same SciFact data, negatives, backbone and schedule (``util.mine_hard_negatives`` against our miner too).
A reduced run (``bench/results/compare-trainers.md``: 300 training claims, one epoch, 87 steps each) found the
candidate pools in agreement (Jaccard 0.964), ``CrossEncoderTrainer`` 7% faster a step (2.29 s against 2.47 s) and
our reranker no worse (alone 0.4037 against 0.3686 nDCG@10, both far below the first stage after so few steps);
a full-length run is what would decide whether this loop stays.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class TrainingLog:
    steps: int = 0
    planned_steps: int = 0
    seconds: float = 0.0
    stopped_by_time_budget: bool = False
    final_loss: float | None = None
    evaluations: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    budgeted_steps: int | None = None
    """Steps the learning-rate schedule was re-planned for when the time budget could not cover ``planned_steps``."""


BUDGET_PROBE_STEPS = 5


def optimise(
    model: Any,
    param_groups: list[dict[str, Any]],
    batches_for_epoch: Callable[[int], Sequence[Any]],
    step_loss: Callable[[Any], Any],
    *,
    epochs: int,
    warmup_ratio: float = 0.1,
    time_budget_s: float | None = None,
    evaluate: Callable[[], float] | None = None,
    description: str = "Training",
    show_progress: bool = True,
) -> TrainingLog:
    """Run ``epochs`` over ``batches_for_epoch(epoch)``; stop early when ``time_budget_s`` is spent.

    With ``evaluate`` (higher is better), it runs after every epoch and the best weights are kept.
    """
    import torch
    from tqdm.auto import tqdm

    epoch_batches = [batches_for_epoch(epoch) for epoch in range(epochs)]
    total = sum(len(b) for b in epoch_batches)
    log = TrainingLog(planned_steps=total)
    if total == 0:
        raise ValueError("no training batches: the training data is empty")
    optimizer = torch.optim.AdamW(param_groups, weight_decay=0.01)
    plan = {"total": total, "warmup": max(1, int(total * warmup_ratio))}

    def schedule(step: int) -> float:
        end, warmup = plan["total"], plan["warmup"]
        return (step + 1) / warmup if step < warmup else max(0.0, (end - step) / max(1, end - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start = time.perf_counter()
    best_score, best_state = -math.inf, None
    running = None
    progress = tqdm(total=total, desc=description, unit="step", disable=not show_progress)
    model.train()
    for epoch, batches in enumerate(epoch_batches):
        for batch in batches:
            loss = step_loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in param_groups for p in g["params"]], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            running = value if running is None else 0.95 * running + 0.05 * value
            log.steps += 1
            if time_budget_s is not None and log.steps % BUDGET_PROBE_STEPS == 0:
                # Re-plan the learning-rate schedule so it decays to zero when the budget runs out. Every few steps,
                # not once: on a shared machine the step time drifts, and a plan made from the first steps alone
                # either stops mid-schedule or spends its last steps at a learning rate of zero.
                elapsed = time.perf_counter() - start
                reachable = log.steps + int(max(0.0, time_budget_s - elapsed) / (elapsed / log.steps))
                plan["total"] = min(total, max(reachable, log.steps + 1))
                plan["warmup"] = max(1, min(int(total * warmup_ratio), int(plan["total"] * warmup_ratio)))
                log.budgeted_steps = plan["total"] if plan["total"] < total else None
            progress.update(1)
            progress.set_postfix(loss=f"{running:.4f}")
            if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                log.stopped_by_time_budget = True
                break
        if evaluate is not None:
            model.eval()
            score = evaluate()
            model.train()
            log.evaluations.append({"epoch": epoch + 1, "step": log.steps, "score": score})
            logger.info("epoch %d: held-out score %.4f", epoch + 1, score)
            if score > best_score:
                best_score, best_state, log.best_epoch = score, copy.deepcopy(model.state_dict()), epoch + 1
        if log.stopped_by_time_budget:
            break
    progress.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    log.seconds = time.perf_counter() - start
    log.final_loss = running
    return log


def set_dropout(model: Any, probability: float) -> None:
    """Every dropout layer of ``model`` at ``probability``, and the config saying so (for whoever trains it next)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = probability
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
        if hasattr(model.config, name):
            setattr(model.config, name, probability)
