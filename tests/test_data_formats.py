"""data.format × the published tokenizer configs (tests/fixtures/chat_templates/, through the demo
tokenizer dressed as each family: its special tokens, BOS, EOS).

"chat" is tests/test_chat_templates.py. Here: "template" (the same template given as a file to a
tokenizer without one), "tulu" (the open-instruct / LESS text, written out by hand, and checked
a second way, the way LESS itself masks: by the token counts of prefix renders) and "text"
(every token after the first, BOS in front when the family has one), each for every family.
The LESS-way masks come from bench/real/formats.py, whose real-model check uses the same code.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.real.formats import less_row  # the real-model check's reference, reused
from iprox_ray.corpus.encode import ChatEncoder, DataFormatError
from iprox_ray.corpus.formats import EncodingSettings, build_encoder
from iprox_ray.corpus.rows import RowError
from iprox_ray.corpus.text import TextEncoder
from iprox_ray.corpus.tulu import TuluEncoder

from chat_families import CONVERSATIONS, FAMILIES, TEMPLATES, chatml, expected_mask, family_tokenizer

NO_SYSTEM = ("gemma-2-2b-it", "mistral-7b-instruct-v0.3")  # their templates cannot take one under "keep"
TEXT = ("Plain text is trained on every token.\n\nA second paragraph, with numbers 12 345 and "
        "punctuation; it ends here.")


# Gemma 2 / Mistral v0.3 with a system message: refused under "keep" (tests/test_chat_templates.py).
@pytest.mark.parametrize("family,conversation", [(f, c) for f in FAMILIES for c in CONVERSATIONS
                                                 if not (f in NO_SYSTEM and "system" in c)])
def test_template_file_encodes_as_the_tokenizer_would_with_it(family, conversation):
    template = (TEMPLATES / f"{family}.jinja").read_text()
    base = family_tokenizer(family, chat_template=False)
    encoder = build_encoder(EncodingSettings("template", 4096, template=template), base)
    messages = CONVERSATIONS[conversation]
    _, ids, mask = expected_mask(base, FAMILIES[family].expected(messages))
    enc = encoder.encode_row(encoder.parse({"messages": messages}, _source()))
    np.testing.assert_array_equal(enc.input_ids, ids)
    np.testing.assert_array_equal(enc.trainable, mask)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_template_file_with_generation_markers_uses_the_native_mask(conversation):
    template = (TEMPLATES / "chatml-generation.jinja").read_text()
    base = family_tokenizer("smollm2-instruct", chat_template=False)
    encoder = build_encoder(EncodingSettings("template", 4096, template=template), base)
    assert encoder.native_mask
    messages = CONVERSATIONS[conversation]
    _, ids, mask = expected_mask(base, chatml(messages))
    enc = encoder.encode(messages)
    np.testing.assert_array_equal(enc.input_ids, ids)
    np.testing.assert_array_equal(enc.trainable, mask)


def tulu_pieces(messages, eos: str, bos: str | None):
    """The Tulu text as trained (content + EOS) and context pieces."""
    pieces = [(bos, False)] if bos else []
    for m in messages:
        if m["role"] == "assistant":
            pieces += [("<|assistant|>\n", False), (m["content"].strip() + eos, True), ("\n", False)]
        else:
            pieces.append((f"<|{m['role']}|>\n{m['content'].strip()}\n", False))
    return pieces


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_tulu_trains_assistant_content_and_eos_only(family, conversation):
    tok = family_tokenizer(family, chat_template=False)
    spec = FAMILIES[family]
    encoder = TuluEncoder(tok, 4096)
    messages = CONVERSATIONS[conversation]
    enc = encoder.encode(messages)
    _, ids, mask = expected_mask(tok, tulu_pieces(messages, spec.eos, spec.bos))
    np.testing.assert_array_equal(enc.input_ids, ids)
    np.testing.assert_array_equal(enc.trainable, mask)
    less_ids, labels = less_row(tok, messages, 4096)
    np.testing.assert_array_equal(enc.input_ids, less_ids)
    np.testing.assert_array_equal(enc.trainable, labels)
    trained = tok.decode(enc.input_ids[enc.trainable])
    assert trained == "".join(m["content"].strip() + spec.eos for m in messages if m["role"] == "assistant")
    assert (enc.input_ids[0] == tok.bos_token_id) == bool(spec.bos)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_trains_every_token_after_the_first(family):
    tok = family_tokenizer(family, chat_template=False)
    enc = TextEncoder(tok, 4096).encode(TEXT)
    body = tok(TEXT, add_special_tokens=False)["input_ids"]
    bos = [tok.bos_token_id] if FAMILIES[family].bos else []
    np.testing.assert_array_equal(enc.input_ids, bos + body)
    assert not enc.trainable[0] and enc.trainable[1:].all()
    assert tok.decode(enc.input_ids[len(bos):]) == TEXT


def test_tulu_truncation_and_an_opening_assistant_message():
    tok = family_tokenizer("mistral-7b-instruct-v0.3", chat_template=False)
    messages = [{"role": "assistant", "content": "Hello."}] + CONVERSATIONS["single"]
    enc = TuluEncoder(tok, 4096).encode(messages)
    assert tok.decode(enc.input_ids[enc.trainable]) == "Hello.</s>" + CONVERSATIONS["single"][1]["content"] + "</s>"
    full = TuluEncoder(tok, 4096).encode(CONVERSATIONS["single"])
    cut = TuluEncoder(tok, full.n_tokens - 3).encode(CONVERSATIONS["single"])
    np.testing.assert_array_equal(cut.input_ids, full.input_ids[:-3])
    with pytest.raises(RowError) as err:
        TuluEncoder(tok, full.n_tokens - 3, "drop").encode(CONVERSATIONS["single"])
    assert err.value.reason == "too-long"


@pytest.mark.parametrize("family", NO_SYSTEM)
def test_tulu_keeps_the_system_prompt_a_template_would_refuse(family):
    tok = family_tokenizer(family, chat_template=False)
    enc = TuluEncoder(tok, 4096).encode(CONVERSATIONS["system"])
    assert "<|system|>\nBe brief.\n<|user|>" in tok.decode(enc.input_ids)
    merged = TuluEncoder(tok, 4096, system="merge").encode(CONVERSATIONS["system"])
    assert "<|user|>\nBe brief.\n\nAdd 2 and 3." in tok.decode(merged.input_ids)


def test_chat_without_a_template_is_refused_naming_the_other_formats():
    tok = family_tokenizer("llama-3.1-8b-instruct", chat_template=False)
    with pytest.raises(DataFormatError) as err:
        ChatEncoder(tok, 512)
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.format: the tokenizer")
    assert all(f'"{name}"' in message for name in ("tulu", "template", "text"))


def test_tulu_without_an_eos_token_is_refused():
    tok = family_tokenizer("qwen2.5-7b-instruct", chat_template=False)
    tok.eos_token = None
    with pytest.raises(DataFormatError, match="eos"):
        TuluEncoder(tok, 512)


def _source(**kw):
    from iprox_ray.spec import SourceSpec

    return SourceSpec(paths=["x"], **kw)


def _job(tmp_path, data: str):
    import tomllib

    from iprox_ray.spec.job import build_job

    tree = tomllib.loads(f'[model]\npath = "m"\n[data]\n{data}\n'
                         '[data.pool]\npaths = ["p"]\n[data.target]\npaths = ["t"]\n')
    return build_job(tree, tmp_path, "job.toml")


def test_data_format_is_one_value_or_a_table_and_always_stored_as_the_table(tmp_path):
    from iprox_ray.spec import SpecError

    one = _job(tmp_path, 'format = "tulu"')
    assert one.science()["data"]["format"] == {"pool": "tulu", "target": "tulu"}
    mixed = _job(tmp_path, 'format = {pool = "text", target = "chat"}')
    assert (mixed.data.format_of(True), mixed.data.format_of(False)) == ("text", "chat")
    assert mixed.fingerprint() != one.fingerprint() != _job(tmp_path, "").fingerprint()
    for bad, says in (('format = "txt"', "data.format: must be one of 'chat', 'tulu'"),
                      ('format = "template"', 'needs data.template_file'),
                      ('template_file = "t.jinja"', 'data.template_file is read only with data.format = "template"'),
                      ('text_windows = "some"', "data.text_windows"), ('system_prompt = "move"', "data.system_prompt")):
        with pytest.raises(SpecError, match=None) as err:
            _job(tmp_path, bad)
        assert says in str(err.value), (bad, str(err.value))


def test_a_new_target_may_change_its_own_format_only(tmp_path):
    from iprox_ray.driver.rescore import RescoreError, load_target_job
    from iprox_ray.driver.rundir import write_config
    from iprox_ray.store.layout import RunLayout

    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    write_config(_job(tmp_path, 'format = "tulu"'), layout)
    job, _ = load_target_job(layout, [str(tmp_path / "new.jsonl")], ['data.format.target="text"'])
    assert (job.data.format_of(True), job.data.format_of(False)) == ("tulu", "text")
    with pytest.raises(RescoreError, match="data.format.pool"):
        load_target_job(layout, [str(tmp_path / "new.jsonl")], ['data.format.pool="text"'])


def test_a_template_file_changed_since_the_run_started_is_refused(tmp_path):
    from iprox_ray.execution.context import RunContext
    from iprox_ray.store.layout import RunLayout
    from iprox_ray.tasks.inputs import encoding_for

    (tmp_path / "chat.jinja").write_text((TEMPLATES / "smollm2-instruct.jinja").read_text())
    job = _job(tmp_path, 'format = "template"\ntemplate_file = "chat.jinja"')
    ctx = RunContext(job, RunLayout(tmp_path / "run"), quiet=True)
    (tmp_path / "run").mkdir()
    first = encoding_for(ctx, "pool")
    assert first.template == (tmp_path / "chat.jinja").read_text() and first.now
    assert encoding_for(ctx, "targets/main").now == first.now  # one instant for the run
    (tmp_path / "chat.jinja").write_text("{{ messages }}")
    with pytest.raises(DataFormatError, match="data.template_file chat.jinja changed since run directory"):
        encoding_for(ctx, "pool")
