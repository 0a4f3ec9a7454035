"""System messages a chat template cannot take (data.system_prompt).

Some published templates refuse a system message (Gemma 2 raises "System role not supported")
or drop it without a word (Mistral v0.3 places it only before the last user message, so a
conversation that ends with the assistant renders as if it had none). With "keep" a row must
reach the model as written: the template's policy is probed once per encoder (a conversation
rendered with and without a system message), and on a template that drops or refuses it, every
row with a system message is checked the same way and quarantined with the reason
`system-prompt`, whose detail names the option; pre-flight refuses the run when a checked row
has it. "merge" prepends the system text to the first user turn (as Gemma 3's own template
does); "drop" removes it.
"""

from __future__ import annotations

from typing import Callable

from iprox_ray.corpus.rows import RowError

REASON = "system-prompt"
FIX = 'set data.system_prompt = "merge" (prepend it to the first user turn) or "drop"'
KEPT, DROPPED, REFUSED = "kept", "dropped", "refused"

# Private-use characters: no template rewrites them, no real row holds them.
PROBE = [{"role": "system", "content": "\ue010"}, {"role": "user", "content": "\ue011"},
         {"role": "assistant", "content": "\ue012"}]

Render = Callable[[list[dict[str, str]], bool], str]


def without_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [m for m in messages if m["role"] != "system"]


def merged(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The system text (all system messages, in order) at the head of the first user turn; a
    conversation with no user turn gets it as one, where the first system message stood."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    if not system:
        return messages
    rest = without_system(messages)
    first_user = next((i for i, m in enumerate(rest) if m["role"] == "user"), None)
    if first_user is None:
        at = next(i for i, m in enumerate(messages) if m["role"] == "system")
        return rest[:at] + [{"role": "user", "content": system}] + rest[at:]
    out = [dict(m) for m in rest]
    out[first_user]["content"] = f"{system}\n\n{out[first_user]['content']}"
    return out


def apply(policy: str, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    if policy == "merge":
        return merged(messages)
    if policy == "drop":
        return without_system(messages)
    return messages


def template_policy(render: Render) -> str:
    """What the template does with a system message: KEPT, DROPPED or REFUSED."""
    try:
        with_it = render(PROBE, False)
    except RowError:
        try:
            render(without_system(PROBE), False)
        except RowError:
            return KEPT  # the template fails on the probe either way: nothing to say about system messages
        return REFUSED
    return DROPPED if with_it == render(without_system(PROBE), False) else KEPT


def check_row(render: Render, messages: list[dict[str, str]], policy: str) -> None:
    """Under "keep" on a template that drops or refuses system messages: quarantine this row
    when it has one the template does not render."""
    if policy == KEPT or not any(m["role"] == "system" for m in messages):
        return
    try:
        rendered = render(messages, False)
    except RowError as err:
        render(without_system(messages), False)  # a row the template refuses anyway keeps its own error
        raise RowError(REASON, f"the chat template refuses system messages ({err.detail}); {FIX}") from None
    if rendered == render(without_system(messages), False):
        raise RowError(REASON, f"the chat template drops this row's system message; {FIX}")
