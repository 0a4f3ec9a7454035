"""data.format through the whole pipeline: a base tokenizer in "tulu", a text pool cut into
windows beside a chat target, the missing-template and system-prompt refusals, and the frozen
render clock across a resume and `iprox-ray score`.

The per-row loss the store holds is checked against a computation of each format's definition
written here from scratch (text and masks built by hand, the model run row by row).
"""

from __future__ import annotations

import datetime
import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from iprox_ray.cli.main import main
from iprox_ray.cost.plan import plan_job
from iprox_ray.driver.pipeline import run_job
from iprox_ray.driver.run import Run
from iprox_ray.driver.rundir import open_run
from iprox_ray.models.loading import load_pretrained, load_tokenizer
from iprox_ray.spec import SpecError, load_job
from iprox_ray.store.sketch_store import OK, SplitStore
from iprox_ray.tasks.inputs import POOL, target_split

from chat_families import family_tokenizer
from conftest import TOKENIZER, make_pool

FAST = ['proxy.method="none"', "warmup.enabled=false", "fidelity.enabled=false"]


def _base_tokenizer(folder):
    tok = load_tokenizer(TOKENIZER)
    tok.chat_template = None
    tok.save_pretrained(folder)
    assert not (folder / "chat_template.jinja").exists()
    return folder


def _row_loss(model, ids: list[int], trained: list[bool]) -> float:
    """Mean next-token cross-entropy over the trained positions, one row alone."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
    losses = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
    mask = torch.tensor(trained[1:])
    return float(losses[mask].mean())


def _store(run_dir, split=POOL):
    store = SplitStore.open(run_dir / "store.zarr", split, mode="r")
    return {name: store.read(name) for name in ("sample_id", "loss", "n_tokens", "written")}


def test_tulu_runs_end_to_end_on_a_base_tokenizer_and_stores_the_less_loss(make_job, tmp_path):
    tokenizer = _base_tokenizer(tmp_path / "base-tokenizer")
    job = load_job(make_job(n_pool=40, k=5), [*FAST, 'data.format="tulu"', f'model.tokenizer="{tokenizer}"'])
    run_dir = tmp_path / "run"
    summary = run_job(job, run_dir, quiet=True)
    assert summary["selected"] == 5
    tok = load_tokenizer(tokenizer)
    model = load_pretrained(run_dir / "warmup" / "model")
    files = sorted((tmp_path / "data").glob("pool-*.parquet"))
    rows = {r["id"]: r for f in files for r in pq.read_table(f).to_pylist()}
    got = _store(run_dir)
    checked = 0
    for sample_id, loss, n_tokens, written in zip(*got.values()):
        if not sample_id:
            continue
        assert written == OK
        text, trained = "", []
        ids = [tok.bos_token_id]
        for m in rows[sample_id]["messages"]:
            head = f"<|{m['role']}|>\n"
            body = m["content"].strip() + (tok.eos_token if m["role"] == "assistant" else "")
            for piece, train in ((head, False), (body, m["role"] == "assistant"), ("\n", False)):
                piece_ids = tok(piece, add_special_tokens=False)["input_ids"]
                text += piece
                ids += piece_ids
                trained += [train] * len(piece_ids)
        trained = [False] + trained
        assert ids[1:] == tok(text, add_special_tokens=False)["input_ids"]  # the pieces tokenise apart here
        assert n_tokens == len(ids)
        assert abs(loss - _row_loss(model, ids, trained)) <= 1e-4 * abs(loss)
        checked += 1
    assert checked == 40


def _documents(n: int) -> list[dict]:
    rng = random.Random(3)
    rows = make_pool(n)
    return [{"doc": f"d{i}", "domain": r["domain"],
             "body": " ".join(m["content"] for m in r["messages"]) * rng.randint(1, 3)} for i, r in enumerate(rows)]


def test_a_text_pool_cut_into_windows_beside_a_chat_target(make_job, tmp_path):
    docs = _documents(30)
    docs[4]["body"] = None  # a bad document: one quarantined row, counted
    path = make_job(n_pool=0, pool_rows=docs, k=6)
    overrides = [*FAST, 'data.format={pool="text", target="chat"}', 'data.text_windows="all"', "data.max_length=48",
                 'data.pool.text_column="body"', 'data.pool.id_column="doc"', "data.pool.rows_per_shard=32"]
    job = load_job(path, overrides)
    run_dir = tmp_path / "run"
    summary = run_job(job, run_dir, quiet=True)
    tok = load_tokenizer(TOKENIZER)
    model = load_pretrained(run_dir / "warmup" / "model")
    got = _store(run_dir)
    by_id = {sid: (loss, n) for sid, loss, n, w in zip(*got.values()) if w == OK}
    expected_ids = set()
    for doc in docs:
        if doc["body"] is None:
            continue
        ids = [tok.bos_token_id] + tok(doc["body"], add_special_tokens=False)["input_ids"]
        k, start = 0, 0
        while True:  # windows of 48 tokens overlapping by one: every token after the first trained once
            window = ids[start: start + 48]
            expected_ids.add(f"{doc['doc']}#{k}")
            loss, n = by_id[f"{doc['doc']}#{k}"]
            assert n == len(window)
            assert abs(loss - _row_loss(model, window, [True] * len(window))) <= 1e-4 * abs(loss)
            if start + 48 >= len(ids):
                break
            start, k = start + 47, k + 1
    assert set(by_id) == expected_ids and len(expected_ids) > len(docs)  # some documents gave several windows
    quarantine = pq.read_table(run_dir / "quarantine.parquet").to_pylist()
    assert [(q["reason"], q["detail"]) for q in quarantine] == [("missing-column", "row has no 'body'")]
    assert summary["rows_quarantined"]["pool"] == 1 and summary["rows_read"]["pool"] == len(expected_ids) + 1
    target = _store(run_dir, target_split("main"))
    assert (target["written"] == OK).sum() == 12
    selected = pq.read_table(run_dir / "selections/main/selected.parquet").to_pylist()
    assert len(selected) == 6 and all("#" in r["id"] and r["text"] and r["source_row"] >= 0 for r in selected)
    # the plan samples documents and counts every window of each (here every document is sampled)
    plan = plan_job(job, sample_rows=64, batches=1)
    assert plan.tokens == int(got["n_tokens"][got["written"] == OK].sum())
    assert any("window rows" in note for note in plan.notes)


def test_a_tokenizer_without_a_chat_template_is_one_line_naming_the_formats(make_job, tmp_path, capsys):
    tokenizer = _base_tokenizer(tmp_path / "base-tokenizer")
    path = make_job(n_pool=20)
    code = main(["run", str(path), "--run-dir", str(tmp_path / "run"), "-q", "--set", f'model.tokenizer="{tokenizer}"'])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: data.format: the tokenizer") and '"tulu"' in err and '"text"' in err
    assert main(["plan", str(path), "--set", f'model.tokenizer="{tokenizer}"']) == 2  # the plan says the same
    assert capsys.readouterr().err == err


SYSTEM_ROWS = [{"id": f"s{i}", "domain": "d", "messages": [{"role": "system", "content": "Be brief."},
                                                           *r["messages"]]} for i, r in enumerate(make_pool(20))]


def _family_model(tmp_path, tiny_model_dir, family):
    """The demo tokenizer dressed as `family`, saved, with a model whose vocabulary covers it."""
    tok = family_tokenizer(family)
    tok.save_pretrained(tmp_path / "tok")
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["vocab_size"] = len(tok)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    return [f'model.tokenizer="{tmp_path / "tok"}"', f'model.path="{tmp_path / "model"}"']


@pytest.mark.parametrize("family", ["mistral-7b-instruct-v0.3", "gemma-2-2b-it"])
def test_system_prompts_a_template_cannot_take_stop_at_preflight_naming_the_option(make_job, tmp_path,
                                                                                   tiny_model_dir, family):
    path = make_job(n_pool=0, pool_rows=SYSTEM_ROWS)
    job = load_job(path, _family_model(tmp_path, tiny_model_dir, family))
    with pytest.raises(SpecError) as err, open_run(job, tmp_path / "run", quiet=True) as ctx:
        Run(ctx).preflight([POOL, target_split("main")])
    message = str(err.value)
    assert message.startswith("data.system_prompt: 20 of 20 checked row(s) of split 'pool' have a system message "
                              "the chat template cannot take (the chat template ")
    assert message.endswith('set data.system_prompt = "merge" (prepend it to the first user turn) or "drop"')


def test_gemma2_rows_with_system_prompts_run_under_merge(make_job, tmp_path, tiny_model_dir):
    path = make_job(n_pool=0, pool_rows=SYSTEM_ROWS, k=4)
    model = _family_model(tmp_path, tiny_model_dir, "gemma-2-2b-it")
    job = load_job(path, [*FAST, 'data.system_prompt="merge"', *model])
    summary = run_job(job, tmp_path / "run", quiet=True)
    assert summary["selected"] == 4
    got = _store(tmp_path / "run")
    assert (got["written"] == OK).sum() == 20


class _Clock(datetime.datetime):
    day = datetime.datetime(2024, 1, 1, 9, 0)  # a Monday

    @classmethod
    def now(cls, tz=None):
        return cls.day


DATED = ("{{ '<|system|>\\nToday is ' + strftime_now('%A %d %B %Y') + '.<|end|>\\n' }}"
         "{%- for m in messages %}{%- if m['role'] == 'assistant' %}{{ '<|assistant|>\\n' }}{% generation %}"
         "{{ m['content'] + '<|end|>' }}{% endgeneration %}{{ '\\n' }}{%- else %}"
         "{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{%- endif %}{%- endfor %}"
         "{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- endif %}")


MONDAY, WEDNESDAY = datetime.datetime(2024, 1, 1, 9, 0), datetime.datetime(2028, 9, 27, 9, 0)


@pytest.fixture
def dated_job(make_job, tmp_path, monkeypatch):
    """A job whose template writes the day; transformers' clock and the run's first encode both
    read _Clock, which starts on MONDAY (raising=False: these tests also run against code that
    records no instant, where they must fail)."""
    from transformers.utils import chat_template_utils

    monkeypatch.setattr(_Clock, "day", MONDAY)
    monkeypatch.setattr(chat_template_utils, "datetime", _Clock)
    monkeypatch.setattr("iprox_ray.tasks.inputs.datetime", _Clock, raising=False)
    tok = load_tokenizer(TOKENIZER)
    tok.chat_template = DATED
    tok.save_pretrained(tmp_path / "dated")
    monday = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=True)["input_ids"]
    monkeypatch.setattr(_Clock, "day", WEDNESDAY)
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=True)["input_ids"] != monday
    monkeypatch.setattr(_Clock, "day", MONDAY)
    return load_job(make_job(n_pool=24, k=3), [*FAST, f'model.tokenizer="{tmp_path / "dated"}"'])


def test_the_render_date_is_frozen_at_the_first_run_for_a_later_score(dated_job, tmp_path, monkeypatch):
    """`iprox-ray score` years later encodes the new target with the run's date, not the day's
    (same tokens and losses as the main target, which holds the same rows)."""
    run_dir = tmp_path / "run"
    run_job(dated_job, run_dir, quiet=True)
    first = _store(run_dir, target_split("main"))
    monkeypatch.setattr(_Clock, "day", WEDNESDAY)
    target = tmp_path / "data" / "target.jsonl"
    assert main(["score", str(run_dir), "--target", str(target), "--name", "later", "-q"]) == 0
    later = _store(run_dir, target_split("later"))
    np.testing.assert_array_equal(later["n_tokens"], first["n_tokens"])
    np.testing.assert_array_equal(later["loss"], first["loss"])
    assert json.loads((run_dir / "render.json").read_text())["now"] == "2024-01-01T09:00:00"


def test_the_render_date_is_frozen_across_a_resume_on_another_day(dated_job, tmp_path, monkeypatch):
    """A run stopped after its pre-flight on Monday and resumed on Wednesday sketches the pool as
    an uninterrupted Monday run does."""
    run_job(dated_job, tmp_path / "whole", quiet=True)
    with open_run(dated_job, tmp_path / "resumed", quiet=True) as ctx:  # the first encode: Monday
        Run(ctx).preflight([POOL, target_split("main")])
    monkeypatch.setattr(_Clock, "day", WEDNESDAY)
    run_job(dated_job, tmp_path / "resumed", quiet=True)
    whole, resumed = _store(tmp_path / "whole"), _store(tmp_path / "resumed")
    np.testing.assert_array_equal(resumed["n_tokens"], whole["n_tokens"])
    np.testing.assert_array_equal(resumed["loss"], whole["loss"])
