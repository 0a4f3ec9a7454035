"""A Jinja chat template rendered with every varying input fixed.

Templates may read the clock: Llama 3.2 and later write `strftime_now("%d %b %Y")` into every
row's system block ("Today Date: ..."). A run must encode a row the same way on every day it
runs (a resume after midnight, `iprox-ray score` a week later), so the renderer is given one
instant, recorded in the run directory at its first encode (tasks/inputs.py), and the
template's `strftime_now` reads that instant instead of the clock.

transformers compiles each template string once (a cached jinja Template) and calls its
`strftime_now` global; a value in the compiled template's own globals shadows the environment's,
so the frozen clock is set there before every render (other renderers of the same template
string in this process may hold another instant, and the template's clock is restored after).
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime

import numpy as np

from iprox_ray.corpus.rows import RowError

GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_ABSENT = object()


def render_instant(now: str | None) -> datetime:
    """The instant a template's clock shows: the recorded ISO time, or now when there is none."""
    return datetime.fromisoformat(now) if now else datetime.now()


def template_error(exc: Exception) -> RowError:
    # jinja's TemplateError (raise_exception) carries the template's own message; say the type otherwise.
    from jinja2 import TemplateError

    text = str(exc) if isinstance(exc, TemplateError) else f"{type(exc).__name__}: {exc}"
    return RowError("template-error", text)


class TemplateRenderer:
    def __init__(self, tokenizer, template: str, now: str | None = None):
        self.tokenizer = tokenizer
        self.template = template
        self.instant = render_instant(now)
        self.native_mask = bool(GENERATION_TAG.search(template))

        def strftime_now(fmt: str) -> str:
            return self.instant.strftime(fmt)

        self._strftime_now = strftime_now

    @contextlib.contextmanager
    def _frozen_clock(self):
        from transformers.utils.chat_template_utils import _compile_jinja_template

        own = _compile_jinja_template(self.template).globals
        own = getattr(own, "maps", [own])[0]  # the template's own layer, above the environment's globals
        before = own.get("strftime_now", _ABSENT)
        own["strftime_now"] = self._strftime_now
        try:
            yield
        finally:  # other users of transformers in this process see their clock again
            if before is _ABSENT:
                own.pop("strftime_now", None)
            else:
                own["strftime_now"] = before

    def render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        try:
            with self._frozen_clock():
                return self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                          add_generation_prompt=generation_prompt)
        except Exception as exc:  # the template's failure on this row, whatever it raised
            raise template_error(exc) from None

    def tokens_and_mask(self, messages: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        """Ids and transformers' assistant mask, for templates with `{% generation %}` markers."""
        try:
            with self._frozen_clock():
                out = self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=True,
                                                         return_dict=True, return_assistant_tokens_mask=True)
        except Exception as exc:  # the template's failure on this row, whatever it raised
            raise template_error(exc) from None
        return np.asarray(out["input_ids"], dtype=np.int64), np.asarray(out["assistant_masks"], dtype=bool)
