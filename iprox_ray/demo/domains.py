"""The five demo domains, each a list of (user, assistant) pairs.

Three domains are real text that ships with Python itself (documentation topics, docstrings,
source code), so the demo needs no download; two are generated from a seeded RNG so that the
numbers are varied and every answer is computed, not written by hand.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import random
import re
import textwrap
import warnings

Pair = tuple[str, str]

MIN_PASSAGE, MAX_PASSAGE = 200, 600  # characters of a documentation passage
MAX_DOCSTRING = 850
MAX_CODE = 850
MIN_CODE_LINES, MAX_CODE_LINES = 5, 40

# Imported for their docstrings: stdlib modules with no side effects at import.
DOC_MODULES = sorted([
    "abc", "argparse", "array", "base64", "binascii", "bisect", "calendar", "cmath", "codecs",
    "collections", "colorsys", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "enum", "filecmp", "fnmatch", "fractions", "functools", "glob", "gzip", "hashlib",
    "heapq", "hmac", "html", "inspect", "io", "ipaddress", "itertools", "json", "keyword",
    "linecache", "locale", "math", "mimetypes", "operator", "os", "os.path", "pathlib", "pickle",
    "pprint", "queue", "random", "re", "reprlib", "sched", "secrets", "shlex", "shutil",
    "statistics", "string", "struct", "tempfile", "textwrap", "threading", "time", "tokenize",
    "traceback", "types", "typing", "unicodedata", "urllib.parse", "uuid", "warnings", "weakref",
    "zipfile", "zlib",
])
# Pure-Python stdlib modules whose function source is readable with inspect.getsource.
CODE_MODULES = sorted([
    "argparse", "ast", "base64", "calendar", "colorsys", "configparser", "contextlib", "copy",
    "csv", "dataclasses", "difflib", "email.utils", "enum", "filecmp", "fnmatch", "fractions",
    "functools", "genericpath", "glob", "gzip", "html", "inspect", "ipaddress", "json.decoder",
    "json.encoder", "mimetypes", "ntpath", "pathlib", "posixpath", "pprint", "quopri", "random",
    "shlex", "shutil", "statistics", "string", "tarfile", "tempfile", "textwrap", "tokenize",
    "traceback", "urllib.parse", "uuid", "warnings", "zipfile",
])


# ----------------------------------------------------------------------------- shared text helpers

def _split_long(paragraph: str, limit: int) -> list[str]:
    """Cut an over-long paragraph at sentence ends so that packing can still use it."""
    if len(paragraph) <= limit:
        return [paragraph]
    pieces, current = [], ""
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        if current and len(current) + 1 + len(sentence) > limit:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    pieces.append(current)
    return [p for p in pieces if len(p) <= limit]  # a single giant sentence is dropped


def pack_paragraphs(paragraphs: list[str], lo: int, hi: int) -> list[str]:
    """Group consecutive paragraphs into passages of lo..hi characters."""
    passages, current = [], ""
    for para in (piece for p in paragraphs for piece in _split_long(p, hi)):
        joined = f"{current}\n\n{para}" if current else para
        if len(joined) <= hi:
            current = joined
            continue
        head, _, last = current.rpartition("\n\n")
        if head and last.endswith(":") and para[:1].isspace() and len(last) + len(para) < hi:
            current, para = head, f"{last}\n\n{para}"  # keep "For example:" with its example
        if len(current) >= lo:
            passages.append(current)
        current = para
    if len(current) >= lo:
        passages.append(current)
    return passages


def trim_passage(passage: str) -> str:
    """Cut the loose ends that packing leaves: an indented code block continued from the previous
    passage at the start, and a "For example:" whose example went to the next one at the end."""
    paragraphs = passage.split("\n\n")
    while paragraphs and paragraphs[0][:1].isspace():
        paragraphs.pop(0)
    while paragraphs and paragraphs[-1].rstrip().endswith(":"):
        paragraphs.pop()
    return "\n\n".join(paragraphs)


def _is_table(paragraph: str) -> bool:
    # Documentation tables are ASCII art that reads badly once cut into passages.
    return any(line.lstrip().startswith(("+-", "+=", "|")) for line in paragraph.splitlines())


def _paragraphs(text: str) -> list[str]:
    paras = [p.strip("\n").rstrip() for p in re.split(r"\n\s*\n", text)]
    return [p for p in paras if p.strip() and not _is_table(p)]


# ----------------------------------------------------------------------------- python_topics

_UNDERLINE = re.compile(r"^([*=\-^~])\1{2,}$")


def _topic_sections(text: str) -> list[tuple[str, str]]:
    """Split a pydoc topic into (heading, body) sections using its reST-style underlines."""
    lines, sections, heading, body = text.splitlines(), [], "", []
    i = 0
    while i < len(lines):
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if lines[i].strip() and _UNDERLINE.match(nxt):
            sections.append((heading, "\n".join(body)))
            heading, body = lines[i].strip(), []
            i += 2
            continue
        body.append(lines[i])
        i += 1
    sections.append((heading, "\n".join(body)))
    return [(h, b) for h, b in sections if h and h != "Footnotes" and b.strip()]


TOPIC_INTRO = ["Explain {title} in Python.", "What is {title} in Python?",
               "Can you describe {title}?"]
TOPIC_SECTION = [
    "Regarding {title}: explain {section}.",
    "In Python, what should I know about {section} ({title})?",
    "Tell me about {section}, from the documentation on {title}.",
]
TOPIC_MORE = ["What else does the documentation say about {subject}?",
              "Continue explaining {subject}."]


def python_topic_pairs(rng: random.Random) -> list[Pair]:
    from pydoc_data.topics import topics

    pairs = []
    for key in sorted(topics):
        sections = _topic_sections(topics[key])
        if not sections:
            continue
        title = sections[0][0]
        for index, (section, body) in enumerate(sections):
            passages = [trim_passage(p) for p in pack_paragraphs(_paragraphs(body), MIN_PASSAGE,
                                                                   MAX_PASSAGE)]
            passages = [p for p in passages if len(p) >= MIN_PASSAGE]
            for part, passage in enumerate(passages):
                if part:
                    template = rng.choice(TOPIC_MORE)
                else:
                    template = rng.choice(TOPIC_INTRO if index == 0 else TOPIC_SECTION)
                subject = section if section == title else f"{section} ({title})"
                question = template.format(title=title, section=section, subject=subject)
                pairs.append((question, passage))
    return pairs


# ----------------------------------------------------------------------------- docstrings

DOC_QUESTIONS = [
    "What does `{name}` do?",
    "Explain the `{name}` {kind} from the Python standard library.",
    "I came across `{name}` in some code. What is it for?",
    "Show me the documentation of `{name}`.",
    "How is `{name}` used in Python?",
]


def _import_quietly(name: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except Exception:  # a module missing on this platform is simply skipped
        return None


def _public_members(module) -> list[tuple[str, object]]:
    return [(n, getattr(module, n)) for n in sorted(dir(module)) if not n.startswith("_")]


def _kind(obj) -> str | None:
    if inspect.isclass(obj):
        return "class"
    if inspect.isroutine(obj):
        return "function"
    return None


def trimmed_docstring(obj) -> str:
    """The object's own docstring (not an inherited one), cut to whole paragraphs."""
    raw = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not isinstance(raw, str):
        return ""
    passages = pack_paragraphs(_paragraphs(inspect.cleandoc(raw)), lo=0, hi=MAX_DOCSTRING)
    return trim_passage(passages[0]) if passages else ""


def docstring_pairs(rng: random.Random) -> list[Pair]:
    pairs = []
    for module_name in DOC_MODULES:
        module = _import_quietly(module_name)
        if module is None:
            continue
        for name, obj in _public_members(module):
            kind = _kind(obj)
            doc = trimmed_docstring(obj) if kind else ""
            if len(doc) < 120:  # one-liners like "Return self==value." teach nothing
                continue
            question = rng.choice(DOC_QUESTIONS).format(name=f"{module_name}.{name}", kind=kind)
            pairs.append((question, doc))
    return pairs


# ----------------------------------------------------------------------------- code

CODE_WITH_PURPOSE = [
    "Write a Python {kind} `{sig}`. It should do this: {purpose}",
    "I need a {kind} with the signature `{sig}`. Purpose: {purpose} Can you write it?",
    "Show me how to implement `{sig}` in Python. {purpose}",
]
CODE_WITHOUT_PURPOSE = [
    "Write the `{qualname}` {kind} from the `{module}` module; its signature is `{sig}`.",
    "Implement `{sig}` the way the `{module}` module does.",
]


def _functions_defined_in(module) -> list[tuple[str, object]]:
    """Module-level functions and class methods whose code lives in this module, by name."""
    found = []
    for name, obj in sorted(vars(module).items()):
        if inspect.isfunction(obj) and obj.__module__ == module.__name__:
            found.append((name, obj))
        elif inspect.isclass(obj) and obj.__module__ == module.__name__:
            for attr, member in sorted(vars(obj).items()):
                member = getattr(member, "__func__", member)  # unwrap static/class methods
                if inspect.isfunction(member) and member.__qualname__ == f"{obj.__name__}.{attr}":
                    found.append((member.__qualname__, member))
    return found


def _source(func) -> str:
    try:
        return textwrap.dedent(inspect.getsource(func)).rstrip()
    except (OSError, TypeError):
        return ""


def _signature(qualname: str, code: str) -> str:
    """The signature as written in the source: inspect.signature would show default values by
    repr, and a function default's repr carries a memory address that changes every run."""
    node = ast.parse(code).body[0]
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{qualname}({ast.unparse(node.args)}){returns}"


def _is_plain_def(code: str) -> bool:
    # Decorated functions are skipped: their source starts with the decorator, not the def.
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return False
    return len(body) == 1 and isinstance(body[0], (ast.FunctionDef, ast.AsyncFunctionDef)) \
        and not body[0].decorator_list


def _purpose(func) -> str:
    doc = inspect.getdoc(func) or ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
    if not first:
        return ""
    return first if first.endswith((".", "?", "!")) else first + "."


def code_pairs(rng: random.Random) -> list[Pair]:
    pairs = []
    for module_name in CODE_MODULES:
        module = _import_quietly(module_name)
        if module is None:
            continue
        for qualname, func in _functions_defined_in(module):
            code = _source(func)
            n_lines = code.count("\n") + 1
            if not code or not MIN_CODE_LINES <= n_lines <= MAX_CODE_LINES or len(code) > MAX_CODE:
                continue
            if not _is_plain_def(code):
                continue
            sig, purpose = _signature(qualname, code), _purpose(func)
            kind = "method" if "." in qualname else "function"
            if purpose and len(purpose) <= 240:
                template = rng.choice(CODE_WITH_PURPOSE)
            else:
                template = rng.choice(CODE_WITHOUT_PURPOSE)
            question = template.format(
                sig=sig, purpose=purpose, kind=kind, qualname=qualname, module=module_name)
            pairs.append((question, f"```python\n{code}\n```"))
    return pairs
