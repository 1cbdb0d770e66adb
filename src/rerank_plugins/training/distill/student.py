"""The student before training: the teacher cut down to a few of its transformer layers.

Kept apart from training because choosing and cutting layers is pure model surgery, needed on its own too (a
benchmark times an untrained student; tests check the weights carried over): the student keeps the teacher's
embeddings and scoring head, so it scores sensibly from the first step, and only the layer choice is up to the caller.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from typing import Any

LAYER_KEY = re.compile(r"^(.*\blayer\.)(\d+)(\..+)$")
"""A parameter of one transformer layer: ``bert.encoder.layer.3.attention...`` (BERT, RoBERTa, ELECTRA, ...)."""


def kept_layers(teacher_layers: int, layers: int | Sequence[int]) -> list[int]:
    """Indices of the teacher's layers the student keeps.

    An int ``k`` keeps ``k`` layers spread evenly from the first to the last (6 layers, k=2: [0, 5]; k=3:
    [0, 2, 5]): the last layer is the one the scoring head was trained on, the first reads the embeddings.
    ``k=1`` keeps the last. A sequence names the layers itself, in increasing order.
    """
    if isinstance(layers, bool):
        raise TypeError(f"layers must be an int or a sequence of layer indices, got {layers!r}")
    if isinstance(layers, int):
        if not 1 <= layers < teacher_layers:
            raise ValueError(
                f"layers must be between 1 and {teacher_layers - 1} (the teacher has {teacher_layers} layers; "
                f"a student needs fewer), got {layers}"
            )
        if layers == 1:
            return [teacher_layers - 1]
        return sorted({round(i * (teacher_layers - 1) / (layers - 1)) for i in range(layers)})
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(f"layers must be an int or a sequence of layer indices, got {type(layers).__name__}")
    keep = list(layers)
    bad = [i for i in keep if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < teacher_layers]
    if bad:
        raise ValueError(f"layer indices must be ints in [0, {teacher_layers - 1}]; bad: {bad}")
    if not keep or len(keep) >= teacher_layers:
        raise ValueError(
            f"keep between 1 and {teacher_layers - 1} of the teacher's {teacher_layers} layers, got {len(keep)}"
        )
    if keep != sorted(set(keep)):
        raise ValueError(f"layer indices must be distinct and increasing, got {keep}")
    return keep


def truncated_student(teacher_path: str | os.PathLike[str], layers: int | Sequence[int]) -> tuple[Any, list[int]]:
    """The teacher (a Hugging Face sequence classifier) with only the layers :func:`kept_layers` picks."""
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path)
    total = getattr(teacher.config, "num_hidden_layers", None)
    if not isinstance(total, int):
        raise ValueError(f"{teacher_path}: its config has no num_hidden_layers; cannot choose layers to keep")
    keep = kept_layers(total, layers)
    state = {}
    for name, tensor in teacher.state_dict().items():
        match = LAYER_KEY.match(name)
        if match is None:
            state[name] = tensor
        elif int(match[2]) in keep:
            state[f"{match[1]}{keep.index(int(match[2]))}{match[3]}"] = tensor
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    student = AutoModelForSequenceClassification.from_config(config)
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:  # an architecture whose layers are not named "...layer.N..."
        raise ValueError(
            f"cannot map {teacher_path}'s layers onto a smaller model (missing: {missing[:3]}, "
            f"unexpected: {unexpected[:3]}); distillation supports encoders with '...layer.N...' parameters"
        )
    return student, keep
