"""data.format = "tulu": the open-instruct ("Tulu") format LESS fine-tunes base models with.

The text, for each message in order, with its content stripped of surrounding whitespace:

    system      <|system|>\\n{content}\\n
    user        <|user|>\\n{content}\\n
    assistant   <|assistant|>\\n{content}{EOS}\\n

(the tags are plain text, EOS is the tokenizer's eos token), tokenised as one string, with the
tokenizer's BOS in front when it has one (what LESS's `tokenizer(text)` adds on Llama-2 and
Mistral). The loss is on every token of each assistant message's content and its EOS, and on
nothing else: LESS also trains the newline after EOS (its masks are cut at the next message's
start); here that newline is context, as the end-of-turn separator is in "chat". An assistant
message that opens the conversation is trained too, as in LESS (less its first token, which has
no prediction). A token is trained when its characters overlap a trained span.
"""

from __future__ import annotations

import numpy as np

from iprox_ray.corpus import system_prompt
from iprox_ray.corpus.encode import DataFormatError, Encoded, finish, token_mask
from iprox_ray.corpus.rows import Conversation, parse_row

TAGS = {"system": "<|system|>\n", "user": "<|user|>\n", "assistant": "<|assistant|>\n"}


def bos_ids(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def render(messages: list[dict[str, str]], eos: str) -> tuple[str, list[tuple[int, int]]]:
    """The Tulu text and the character spans [start, end) of each assistant content plus EOS."""
    parts, spans, pos = [], [], 0
    for m in messages:
        tag, content = TAGS[m["role"]], m["content"].strip()
        if m["role"] == "assistant":
            spans.append((pos + len(tag), pos + len(tag) + len(content) + len(eos)))
            piece = f"{tag}{content}{eos}\n"
        else:
            piece = f"{tag}{content}\n"
        parts.append(piece)
        pos += len(piece)
    return "".join(parts), spans


class TuluEncoder:
    def __init__(self, tokenizer, max_length: int, truncation: str = "right", system: str = "keep"):
        if not tokenizer.eos_token:
            raise DataFormatError('data.format = "tulu" ends every assistant turn with the eos token, and the '
                                  "tokenizer has none; give a tokenizer with an eos_token")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self.system = system  # the format renders system messages itself: "keep" keeps them
        self.bos = bos_ids(tokenizer)

    parse = staticmethod(parse_row)

    def encode_row(self, row: Conversation) -> Encoded:
        return self.encode(row.messages)

    def encode(self, messages: list[dict[str, str]]) -> Encoded:
        text, spans = render(system_prompt.apply(self.system, messages), self.tokenizer.eos_token)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        ids = np.asarray(self.bos + list(enc["input_ids"]), dtype=np.int64)
        mask = np.concatenate([np.zeros(len(self.bos), dtype=bool), token_mask(offsets, spans)])
        return finish(ids, mask, self.max_length, self.truncation, "assistant")
