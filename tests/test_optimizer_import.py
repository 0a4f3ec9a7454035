"""Importers for the optimizer files real trainers write: transformers Trainer and accelerate."""

import pytest
import torch

from iprox_ray.models.optimizer_state import AdamState, import_torch_optimizer, load_adam_state
from tests.sketch_reference import tiny_model


def _batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 120, (2, 10), generator=g) for _ in range(n)]


def _expected(optimizer, model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (s["exp_avg"], s["exp_avg_sq"]) for p, s in optimizer.state.items()}


def _check(state: AdamState, expected, n_steps: int):
    assert set(state.exp_avg) == set(expected)
    for name, (m, v) in expected.items():
        torch.testing.assert_close(state.exp_avg[name], m.float())
        torch.testing.assert_close(state.exp_avg_sq[name], v.float())
    assert state.step == n_steps


def test_accelerate_optimizer_bin(tmp_path):
    from accelerate import Accelerator

    model = tiny_model("llama").train()
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.99), eps=1e-7)
    model, optimizer = accelerator.prepare(model, optimizer)
    for ids in _batches(3):
        loss = model(input_ids=ids, labels=ids).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    accelerator.save_state(str(tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "optimizer.bin").exists()
    state = load_adam_state(tmp_path / "ckpt", model)
    _check(state, _expected(optimizer.optimizer, model), 3)
    assert state.betas == (0.8, 0.99) and state.eps == 1e-7


def test_trainer_optimizer_pt_with_decay_groups(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = tiny_model("qwen2")  # has biases and norms: the Trainer puts them in a second group
    rows = [{"input_ids": ids[0], "labels": ids[0]} for ids in _batches(8, seed=1)]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, save_steps=2, per_device_train_batch_size=2,
                             weight_decay=0.1, learning_rate=1e-3, report_to=[], use_cpu=True, logging_steps=100)
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    ckpt = tmp_path / "out" / "checkpoint-2"
    assert (ckpt / "optimizer.pt").exists()
    assert len(trainer.optimizer.param_groups) == 2
    state = load_adam_state(ckpt / "optimizer.pt", model)
    _check(state, _expected(trainer.optimizer, model), 2)
    # The flat named_parameters order would mislabel tensors: the importer must not use it here.
    flat = [n for n, p in model.named_parameters() if p.requires_grad]
    with pytest.raises(ValueError, match="no parameter order matches"):
        import_torch_optimizer(ckpt / "optimizer.pt", model, names=flat)


def test_plain_torch_state_dict_and_a_wrong_model(tmp_path):
    model = tiny_model("gpt2").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for ids in _batches(2):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    _check(import_torch_optimizer(tmp_path / "optimizer.pt", model), _expected(optimizer, model), 2)
    with pytest.raises(ValueError, match="no parameter order matches"):
        import_torch_optimizer(tmp_path / "optimizer.pt", tiny_model("llama"))
    # Round trip through the trainer-independent format.
    state = import_torch_optimizer(tmp_path / "optimizer.pt", model)
    state.save(tmp_path / "state")
    _check(load_adam_state(tmp_path / "state"), _expected(optimizer, model), 2)
