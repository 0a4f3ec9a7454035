"""A brief supervised fine-tune (the LESS warm-up): AdamW, linear decay, assistant-only loss."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from iprox_ray.models.loss import per_sample_loss
from iprox_ray.models.optimizer_state import AdamState

BatchTensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids, attention_mask, trainable


def finetune(
    model: torch.nn.Module,
    epochs: Sequence[Sequence[BatchTensors]],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    on_step: Callable[[int, float], None] | None = None,
    on_skip: Callable[[int], None] | None = None,
) -> AdamState:
    """Train every parameter on the given batches (one list per epoch); return the Adam state.

    A batch with a non-finite loss or gradient (e.g. a NaN weight some rows reach) is skipped and
    reported through `on_skip`, so one bad row cannot turn every weight into NaN."""
    params = [p for p in model.parameters() if p.requires_grad]
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    total = max(1, sum(len(e) for e in epochs))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total))
    device = next(model.parameters()).device
    model.train()
    step = 0
    for batches in epochs:
        for input_ids, attention_mask, trainable in batches:
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            loss = per_sample_loss(logits, input_ids.to(device), trainable.to(device)).mean()
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                if on_skip:
                    on_skip(step)
                continue
            loss.backward()
            if not torch.isfinite(torch.nn.utils.clip_grad_norm_(params, float("inf"))):
                optimizer.zero_grad(set_to_none=True)
                if on_skip:
                    on_skip(step)
                continue
            optimizer.step()
            schedule.step()
            step += 1
            if on_step:
                on_step(step, loss.item())
    model.eval()
    return AdamState.from_torch(optimizer, names)
