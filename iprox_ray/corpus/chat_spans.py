"""Where each assistant turn lies in a chat template's rendering, for templates without
`{% generation %}` markers.

What is trained, per assistant message that follows another message: the text the template
renders for that turn after its generation prompt, up to and including the end-of-turn marker
right after the content (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `</s>`, `<|end|>`, ...);
not the separator after the marker (a newline), nor what a template appends once the whole
conversation is over (Phi-3's trailing eos). Template text between the generation prompt and
the content belongs to the turn (Qwen3's empty `<think>` block on the last turn, Mistral's
space before the answer). An assistant message that opens the conversation answers nothing
and is context only.

Real templates are not prefix-consistent (Qwen3 renders the last assistant turn unlike the
earlier ones, Phi-3 ends a finished conversation with eos, Mistral v0.3 places or drops the
system prompt by position), so nothing is assumed: every position is measured in the full
rendering and each piece taken from a partial render is checked to be there.

1. Content of message j: render the conversation with that content replaced by a sentinel
   character; the two renders differ where the content is (checked: the sentinel is rendered
   once and ends the difference, so the content's end is exact; the start may lie earlier when
   the template rebuilds text from the content, as Qwen3 does with reasoning).
2. Turn start: render messages[:i] with the generation prompt, message i-1's content a
   sentinel. What follows the sentinel (i-1's end of turn, the separator, the prompt) must
   follow message i-1's content in the full render; the turn starts after it.
3. Turn end: render the conversation cut after turn i (content a sentinel), once ending there
   and once followed by a user message. Their common text after the sentinel, up to the
   first separator, is the end-of-turn marker; it must follow the content in the full render.

A failed check raises TemplateMismatch (the row is quarantined), never a guess.
"""

from __future__ import annotations

import re
from typing import Callable

from iprox_ray.corpus.rows import RowError

SENTINEL = "\ue000"  # private-use characters: absent from real text, untouched by `trim`
FOLLOWER = "\ue001"

Render = Callable[[list[dict[str, str]], bool], str]  # (messages, add_generation_prompt) -> text


class TemplateMismatch(RowError):
    def __init__(self, detail: str):
        super().__init__("template-mismatch", detail)


def common_prefix(a: str, b: str) -> int:
    """Length of the common prefix (binary search over C-level slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _with_content(messages: list[dict[str, str]], j: int, content: str) -> list[dict[str, str]]:
    out = [dict(m) for m in messages]
    out[j]["content"] = content
    return out


def _after_sentinel(text: str, what: str) -> str:
    if text.count(SENTINEL) != 1:
        raise TemplateMismatch(f"{what}: the template does not render the message's content exactly once")
    return text[text.index(SENTINEL) + 1:]


class TurnLocator:
    """Character spans [start, end) of the trained assistant turns in the full rendering."""

    def __init__(self, render: Render, atomic_tokens: list[str] = ()):
        self.render = render
        # A common prefix must not end inside a special token (`<|end|>\n<|user|>` vs `...<|endoftext|>`).
        tokens = sorted((t for t in atomic_tokens if t), key=len, reverse=True)
        self._atoms = re.compile("|".join(map(re.escape, tokens))) if tokens else None
        self._longest = len(tokens[0]) if tokens else 0

    def spans(self, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        full = self.render(messages, False)
        located: dict[int, tuple[int, int]] = {}

        def content(j: int) -> tuple[int, int]:
            if j not in located:
                located[j] = self._locate(messages, j, full)
            return located[j]

        spans: list[tuple[int, int]] = []
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant" or i == 0:
                continue
            lo, hi = content(i)
            start = self._turn_start(messages, i, full, content(i - 1)[1])
            marker = self._end_marker(messages, i)
            if not full.startswith(marker, hi):
                raise TemplateMismatch(f"message {i}: its end-of-turn marker {marker!r} does not follow its content")
            end = hi + len(marker)
            previous_end = spans[-1][1] if spans else 0
            if not previous_end <= start <= lo:
                raise TemplateMismatch(f"message {i}: the turn's prompt does not precede its content")
            spans.append((start, end))
        return full, spans

    def _locate(self, messages, j: int, full: str) -> tuple[int, int]:
        other = self.render(_with_content(messages, j, SENTINEL), False)
        p = common_prefix(full, other)
        s = common_prefix(full[p:][::-1], other[p:][::-1])
        # The renders may differ before the content too (Qwen3 rebuilds a reasoning turn's
        # `<think>` block from the content); what follows the content must be common to both.
        if other.count(SENTINEL) != 1 or not other[p: len(other) - s].endswith(SENTINEL):
            raise TemplateMismatch(f"message {j}: the template does not render its content exactly once")
        return p, len(full) - s

    def _turn_start(self, messages, i: int, full: str, prev_end: int) -> int:
        prompt = self.render(_with_content(messages[:i], i - 1, SENTINEL), True)
        tail = _after_sentinel(prompt, f"message {i - 1}")
        if not full.startswith(tail, prev_end):
            raise TemplateMismatch(f"message {i}: the conversation does not render the generation prompt "
                                   f"{tail!r} before this turn")
        return prev_end + len(tail)

    def _end_marker(self, messages, i: int) -> str:
        head = _with_content(messages[: i + 1], i, SENTINEL)
        ending = _after_sentinel(self.render(head, False), f"message {i}")
        followed = _after_sentinel(self.render(head + [{"role": "user", "content": FOLLOWER}], False),
                                   f"message {i}")
        n = self._whole_tokens(common_prefix(ending, followed), ending, followed)
        # The marker is the first run of non-space text; what follows it is separator.
        return re.match(r"\s*\S*", ending[:n]).group().rstrip()

    def _whole_tokens(self, n: int, *texts: str) -> int:
        """The largest cut <= n that splits no special token in any of the texts."""
        while self._atoms is not None:
            cuts = [m.start() for text in texts for m in self._atoms.finditer(text, 0, n + self._longest)
                    if m.start() < n < m.end()]
            if not cuts:
                break
            n = min(cuts)
        return n
