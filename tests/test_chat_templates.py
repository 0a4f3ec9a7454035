"""Assistant-token masks under real chat templates (tests/fixtures/chat_templates/, as published).

Each family's expected rendering is written out here independently, piece by piece, with the
pieces that must be trained flagged; the expected mask maps those character spans to tokens by
their offsets. The encoder's ids and mask must equal them exactly.
"""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest

from iprox_ray.corpus.encode import ChatEncoder
from iprox_ray.corpus.rows import RowError

from chat_families import (
    A1,
    A2,
    CONVERSATIONS,
    FAMILIES,
    SYSTEM,
    TEMPLATES,
    U1,
    U2,
    chatml,
    expected_mask,
    family_tokenizer,
    llama3,
)

# Gemma 2 refuses system messages and Mistral v0.3 drops them (tests below): not under "keep".
NO_SYSTEM = ("gemma-2-2b-it", "mistral-7b-instruct-v0.3")
CASES = [(f, c) for f in FAMILIES for c in CONVERSATIONS if not (f in NO_SYSTEM and "system" in c)]


@pytest.mark.parametrize("family,conversation", CASES)
def test_assistant_mask_is_exact(family, conversation):
    tok = family_tokenizer(family)
    encoder = ChatEncoder(tok, 4096)
    assert not encoder.native_mask  # mentioning add_generation_prompt is not a {% generation %} tag
    messages = CONVERSATIONS[conversation]
    text, ids, mask = expected_mask(tok, FAMILIES[family].expected(messages))
    assert tok.apply_chat_template(messages, tokenize=False) == text
    enc = encoder.encode(messages)
    np.testing.assert_array_equal(enc.input_ids, ids)
    np.testing.assert_array_equal(enc.trainable, mask)
    trained = tok.decode(enc.input_ids[enc.trainable])
    n_turns = sum(m["role"] == "assistant" for m in messages)
    assert trained.count(FAMILIES[family].end_of_turn) == n_turns


def test_every_family_is_covered_by_a_fixture():
    names = {p.stem for p in TEMPLATES.glob("*.jinja")}
    assert set(FAMILIES) | {"chatml-generation"} == names


@pytest.mark.parametrize("family,conversation", [(f, c) for f in NO_SYSTEM for c in ("system", "multi-system")])
def test_a_system_message_the_template_cannot_take_is_quarantined_naming_the_option(family, conversation):
    encoder = ChatEncoder(family_tokenizer(family), 4096)
    with pytest.raises(RowError) as err:
        encoder.encode(CONVERSATIONS[conversation])
    what = "refuses system messages (System role not supported)" if family == "gemma-2-2b-it" else \
        "drops this row's system message"
    assert err.value.reason == "system-prompt"
    assert err.value.detail == (f"the chat template {what}; set data.system_prompt = \"merge\" (prepend it to the "
                                f"first user turn) or \"drop\"")


def test_the_template_policy_is_probed_once_per_encoder():
    policies = {f: ChatEncoder(family_tokenizer(f), 4096).system_policy for f in FAMILIES}
    assert policies == {f: {"gemma-2-2b-it": "refused", "mistral-7b-instruct-v0.3": "dropped"}.get(f, "kept")
                        for f in FAMILIES}


@pytest.mark.parametrize("family", NO_SYSTEM)
@pytest.mark.parametrize("conversation", ["system", "multi-system"])
def test_merge_prepends_the_system_prompt_to_the_first_user_turn(family, conversation):
    tok = family_tokenizer(family)
    messages = CONVERSATIONS[conversation]
    merged = [{"role": "user", "content": f"{SYSTEM}\n\n{messages[1]['content']}"}] + messages[2:]
    _, ids, mask = expected_mask(tok, FAMILIES[family].expected(merged))
    enc = ChatEncoder(tok, 4096, system="merge").encode(messages)
    np.testing.assert_array_equal(enc.input_ids, ids)
    np.testing.assert_array_equal(enc.trainable, mask)
    assert SYSTEM in tok.decode(enc.input_ids)
    dropped = ChatEncoder(tok, 4096, system="drop").encode(messages)
    _, ids, mask = expected_mask(tok, FAMILIES[family].expected(messages[1:]))
    np.testing.assert_array_equal(dropped.input_ids, ids)
    np.testing.assert_array_equal(dropped.trainable, mask)


def test_a_row_the_template_refuses_for_another_reason_keeps_its_own_error():
    encoder = ChatEncoder(family_tokenizer("gemma-2-2b-it"), 4096)
    tangled = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": U1},
               {"role": "user", "content": U2}, {"role": "assistant", "content": A1}]
    with pytest.raises(RowError) as err:
        encoder.encode(tangled)
    assert err.value.reason == "template-error" and "roles must alternate" in err.value.detail


class _OtherDay(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2031, 3, 4, 23, 59)


def test_the_render_clock_is_the_recorded_instant_not_the_wall_clock(monkeypatch):
    """Llama 3.2 writes strftime_now("%d %b %Y") into every row: an encoder given the run's
    instant renders that date whatever the clock says (a resume after midnight, a later score)."""
    from transformers.utils import chat_template_utils

    monkeypatch.setattr(chat_template_utils, "datetime", _OtherDay)
    tok = family_tokenizer("llama-3.2-3b-instruct")
    assert "Today Date: 04 Mar 2031" in tok.apply_chat_template(CONVERSATIONS["single"], tokenize=False)
    encoder = ChatEncoder(tok, 4096, now="2024-12-25T08:00:00")
    _, ids, mask = expected_mask(tok, llama3(CONVERSATIONS["single"], "25 Dec 2024"))
    enc = encoder.encode(CONVERSATIONS["single"])
    np.testing.assert_array_equal(enc.input_ids, ids)
    np.testing.assert_array_equal(enc.trainable, mask)
    # another encoder of the same template with another instant in the same process keeps its own
    other = ChatEncoder(tok, 4096, now="2025-01-02T08:00:00").encode(CONVERSATIONS["single"])
    assert "Today Date: 02 Jan 2025" in tok.decode(other.input_ids)
    assert "Today Date: 25 Dec 2024" in tok.decode(encoder.encode(CONVERSATIONS["single"]).input_ids)


@pytest.mark.parametrize("family", ["gemma-2-2b-it", "gemma-3-it", "mistral-7b-instruct-v0.3"])
def test_roles_that_do_not_alternate_are_a_template_error(family):
    encoder = ChatEncoder(family_tokenizer(family), 4096)
    with pytest.raises(RowError) as err:
        encoder.encode([{"role": "user", "content": U1}, {"role": "user", "content": U2},
                        {"role": "assistant", "content": A1}])
    assert err.value.reason == "template-error" and "roles must alternate" in err.value.detail


def test_generation_markers_use_the_native_mask_and_agree_with_the_measured_spans():
    template = (TEMPLATES / "chatml-generation.jinja").read_text()
    tok = family_tokenizer("smollm2-instruct", template)
    native = ChatEncoder(tok, 4096)
    assert native.native_mask
    measured = ChatEncoder(tok, 4096)
    measured.native_mask = False
    for messages in CONVERSATIONS.values():
        a, b = native.encode(messages), measured.encode(messages)
        _, ids, mask = expected_mask(tok, chatml(messages))
        np.testing.assert_array_equal(a.input_ids, ids)
        np.testing.assert_array_equal(a.trainable, mask)
        np.testing.assert_array_equal(b.trainable, mask)


def test_an_assistant_message_opening_the_conversation_is_context():
    encoder = ChatEncoder(family_tokenizer("smollm2-instruct"), 4096)
    messages = [{"role": "assistant", "content": "Hello, ask me."}] + CONVERSATIONS["single"]
    enc = encoder.encode(messages)
    assert encoder.tokenizer.decode(enc.input_ids[enc.trainable]) == A1 + "<|im_end|>"


def test_a_template_that_renders_content_twice_is_a_mismatch():
    echo = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
            "{% if m['role'] == 'assistant' %}{{ '(' + m['content'] + ')' }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    encoder = ChatEncoder(family_tokenizer("smollm2-instruct", echo), 4096)
    with pytest.raises(RowError) as err:
        encoder.encode(CONVERSATIONS["single"])
    assert err.value.reason == "template-mismatch" and "exactly once" in err.value.detail


def test_a_template_error_quarantines_its_row_and_keeps_the_shard(tmp_path):
    from iprox_ray.corpus.manifest import freeze_manifest
    from iprox_ray.corpus.shard_reader import read_shard
    from iprox_ray.spec import SourceSpec

    tangled = [{"role": "user", "content": U1}, {"role": "user", "content": U2}, {"role": "assistant", "content": A1}]
    rows = [{"id": "a", "messages": CONVERSATIONS["multi"]}, {"id": "bad", "messages": tangled},
            {"id": "c", "messages": CONVERSATIONS["system"]}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = freeze_manifest(["rows.jsonl"], "auto", tmp_path, 8, tmp_path / "m.parquet", tmp_path / "m.json", {})
    encoder = ChatEncoder(family_tokenizer("gemma-3-it"), 4096)
    out = read_shard("pool", manifest.shards[0], SourceSpec(paths=["rows.jsonl"], id_column="id"), encoder)
    assert [c.sample_id for c in out.conversations] == ["a", "c"] and out.local_rows == [0, 2]
    assert [(q["sample_id"], q["row"], q["reason"], q["detail"]) for q in out.quarantine] == [
        ("bad", 1, "template-error", "Conversation roles must alternate user/assistant/user/assistant/...")]


def test_qwen3_reasoning_is_trained_on_the_last_turn_only_as_the_template_renders_it():
    tok = family_tokenizer("qwen3-0.6b")
    messages = [{"role": "user", "content": U1}, {"role": "assistant", "content": "<think>\nR1\n</think>\n\n" + A1},
                {"role": "user", "content": U2}, {"role": "assistant", "content": "<think>R2</think>" + A2}]
    pieces = [(f"<|im_start|>user\n{U1}<|im_end|>\n<|im_start|>assistant\n", False), (A1 + "<|im_end|>", True),
              (f"\n<|im_start|>user\n{U2}<|im_end|>\n<|im_start|>assistant\n", False),
              ("<think>\nR2\n</think>\n\n" + A2 + "<|im_end|>", True), ("\n", False)]
    text, ids, mask = expected_mask(tok, pieces)
    assert tok.apply_chat_template(messages, tokenize=False) == text  # R1 is dropped from the earlier turn
    enc = ChatEncoder(tok, 4096).encode(messages)
    np.testing.assert_array_equal(enc.input_ids, ids)
    np.testing.assert_array_equal(enc.trainable, mask)


def test_the_end_marker_stops_at_a_special_token_boundary():
    # Phi-3 without its newlines: after `<|end|>` come `<|user|>` or, at the end, `<|endoftext|>`;
    # their common `<|` must not be taken for part of the marker.
    packed = (TEMPLATES / "phi-3-mini-4k-instruct.jinja").read_text().replace("\n", "")
    tok = family_tokenizer("phi-3-mini-4k-instruct", packed)
    enc = ChatEncoder(tok, 4096).encode(CONVERSATIONS["multi"])
    assert tok.decode(enc.input_ids[enc.trainable]) == A1 + "<|end|>" + A2 + "<|end|>"
