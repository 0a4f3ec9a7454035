"""The six text sources of bench/real/corpus.py: each domain lists its items (a stable key and a
render function) and renders one item into (candidate questions, real text trimmed to a few
sentences). Only files already on this machine are read; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import importlib
import inspect
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Callable, Iterator

MIN_CHARS, MAX_COST = 160, 600  # answer window: >= 160 chars, <= 600 cost units (~40-160 tokens)

# ---------------------------------------------------------------- text helpers


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, reflowed; a bullet line (* - + o) keeps its own line."""
    text = re.sub(r"(\w)\u2010\n\s*(\w)", r"\1\2", text)  # man(1) hyphenation at line ends
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = re.split(r"\n(?=\s*(?:[*\-+\u2022]|o)\s)", para.strip())
        out.append("\n".join(" ".join(line.split()) for line in lines if line.strip()))
    return [p for p in out if p]


def _char_cost(ch: str) -> int:
    # English words run ~4 characters a token; digits and punctuation are ~1 token each
    return 1 if (ch.isalpha() or ch.isspace() or ch == "_") else 4


def cost(text: str) -> int:
    """A tokenizer-free length estimate (about 4 units per SmolLM2 token)."""
    return sum(map(_char_cost, text))


def fit(text: str, budget: int) -> int:
    """How many leading characters of `text` stay within `budget` cost units."""
    spent = 0
    for i, ch in enumerate(text):
        spent += _char_cost(ch)
        if spent > budget:
            return i
    return len(text)


def trim(paras: list[str], limit: int = MAX_COST) -> str:
    """Whole paragraphs while they fit; the first one that does not is cut at a sentence end."""
    out: list[str] = []
    for para in paras:
        room = limit - sum(cost(p) + 2 for p in out)
        if room <= 60:
            break
        if cost(para) <= room:
            out.append(para)
            continue
        room = fit(para, room)
        cut = [m.end() for m in re.finditer(r"[.!?](?=\s)", para[:room])]
        if cut and cut[-1] > 60:
            out.append(para[: cut[-1]])
        elif not out:  # nothing yet: cut at a word and mark it
            out.append(para[: para.rfind(" ", 0, room - 4)] + " ...")
        break
    if len(out) > 1 and out[-1].endswith(":") and out[-1] is not paras[-1]:
        out.pop()  # do not end on an introduction to text that was cut
    return "\n\n".join(out).strip()


# ---------------------------------------------------------------- domain: Python stdlib docstrings

PY_MODULES = """textwrap os os.path shutil json re collections itertools functools math statistics
random string datetime calendar pathlib subprocess threading queue heapq bisect copy pickle csv
zipfile tarfile gzip bz2 lzma zlib hashlib hmac base64 binascii struct io tempfile glob fnmatch
difflib argparse logging unittest inspect typing dataclasses enum decimal fractions operator
contextlib abc urllib.parse urllib.request http.client http.cookies email.utils html html.parser
xml.etree.ElementTree sqlite3 socket select selectors signal time uuid secrets shlex platform
locale gettext codecs unicodedata array weakref gc traceback warnings pprint reprlib
configparser sched ipaddress mimetypes filecmp stat tokenize ast dis timeit cmath numbers graphlib
concurrent.futures asyncio multiprocessing sysconfig zipimport importlib pkgutil site token
keyword linecache plistlib quopri netrc wave colorsys imghdr smtplib ftplib poplib imaplib
""".split()


def python_items() -> Iterator[tuple[str, Callable]]:
    for modname in PY_MODULES:
        try:
            mod = importlib.import_module(modname)
        except Exception:
            continue
        for name in sorted(dir(mod)):
            obj = getattr(mod, name, None)
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isbuiltin(obj)
                                            or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", None) not in (modname, mod.__name__):
                continue  # re-exported from elsewhere
            yield f"{modname}.{name}", (lambda o=obj, q=f"{modname}.{name}": python_row(q, o))


def python_row(qual: str, obj) -> tuple[str, str] | None:
    doc = inspect.getdoc(obj) or ""
    paras = [p for p in paragraphs(doc) if not p.startswith(">>>")]
    kind = "class" if inspect.isclass(obj) else "function"
    asks = [f"What does the Python {kind} `{qual}` do?", f"Explain `{qual}` from the Python standard library.",
            f"How is the Python {kind} `{qual}` used?"]
    return asks, trim(paras)


# ---------------------------------------------------------------- domain: man pages

MAN_SECTIONS = ("1", "5", "7", "8")


def man_items() -> Iterator[tuple[str, Callable]]:
    for sec in MAN_SECTIONS:
        folder = Path(f"/usr/share/man/man{sec}")
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.name.startswith("gcloud") or path.is_symlink():
                continue  # ~17k generated Google Cloud SDK pages would swamp the rest
            name = re.sub(r"\.\d\w*(\.gz)?$", "", path.name)
            yield f"{name}({sec})", (lambda p=path, n=name, s=sec: man_row(p, n, s))


def man_row(path: Path, name: str, sec: str) -> tuple[list[str], str] | None:
    env = {**os.environ, "MANWIDTH": "300", "LANG": "C.UTF-8", "MAN_KEEP_FORMATTING": ""}
    try:
        text = subprocess.run(["man", "-P", "cat", "-l", str(path)], capture_output=True, text=True,
                              env=env, timeout=30).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    text = re.sub(r".\x08", "", text)
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Z ]+$", line):
            current = line.strip()
            sections[current] = []
        elif current:
            sections[current].append(line)
    name_line = " ".join(" ".join(sections.get("NAME", [])).split())
    desc = paragraphs("\n".join(sections.get("DESCRIPTION", [])))
    if not name_line or not desc:
        return None
    if sec in ("1", "8"):
        asks = [f"What does the `{name}` command do?", f"Summarise the man page {name}({sec})."]
    else:
        asks = [f"What is described in the man page {name}({sec})?", f"Summarise the man page {name}({sec})."]
    return asks, trim([name_line] + desc)


# ---------------------------------------------------------------- domain: Debian package descriptions


def dpkg_items() -> Iterator[tuple[str, Callable]]:
    status = Path("/var/lib/dpkg/status")
    blocks = status.read_text(errors="replace").split("\n\n") if status.exists() else []
    for block in sorted(blocks):
        pkg = re.search(r"^Package: (\S+)", block, re.M)
        desc = re.search(r"^Description: (.*(?:\n .*)*)", block, re.M)
        if pkg and desc:
            yield pkg.group(1), (lambda p=pkg.group(1), d=desc.group(1): dpkg_row(p, d))


def dpkg_row(pkg: str, desc: str) -> tuple[list[str], str] | None:
    synopsis, _, body = desc.partition("\n")
    body = "\n".join("" if line.strip() == "." else line for line in body.splitlines())
    paras = [p for p in paragraphs(body) if not p.startswith("This package contains the debugging")]
    asks = [f"Describe the Debian package `{pkg}`.", f"What is the `{pkg}` package in Debian for?",
            f"What would I get by installing the Debian package `{pkg}`?"]
    return asks, trim([synopsis.strip().rstrip(".") + "."] + paras)


# ---------------------------------------------------------------- domain: Debian changelog entries


def changelog_items() -> Iterator[tuple[str, Callable]]:
    seen = set()
    for path in sorted(Path("/usr/share/doc").glob("*/changelog.Debian.gz")):
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            text = gzip.open(real, "rt", errors="replace").read(200_000)
        except OSError:
            continue
        entries = re.findall(r"^(\S+) \(([^)]+)\) [^\n]*\n(.*?)^ -- ", text, re.M | re.S)
        for pkg, version, body in entries[:4]:  # the newest few entries of each package
            yield f"{pkg} {version}", (lambda p=pkg, v=version, b=body: changelog_row(p, v, b))


def changelog_row(pkg: str, version: str, body: str) -> tuple[list[str], str] | None:
    items = re.split(r"\n\s*(?=[*\-+] )", "\n" + body.strip())
    lines = [" ".join(i.split()) for i in items if i.strip()]
    asks = [f"What changed in version {version} of the Debian package {pkg}?",
            f"Summarise the Debian changelog entry for {pkg} {version}."]
    return asks, trim(["\n".join(lines)])


# ---------------------------------------------------------------- domain: GNU Info manuals


def info_items() -> Iterator[tuple[str, Callable]]:
    for path in sorted(Path("/usr/share/info").glob("*.info*.gz")):
        manual = path.name.split(".info")[0]
        text = gzip.open(path, "rt", errors="replace").read()
        for node in text.split("\x1f")[1:]:
            head, _, body = node.lstrip("\n").partition("\n")
            m = re.search(r"Node: ([^,\n]+)", head)
            # Index nodes are lists; licence appendices repeat the licences domain
            if m and m.group(1) != "Top" and not re.search(r"Index|License|Licence|Copying", m.group(1)):
                yield f"{manual}:{m.group(1)}", (lambda n=m.group(1), b=body, g=manual: info_row(g, n, b))


def info_row(manual: str, node: str, body: str) -> tuple[list[str], str] | None:
    body = body.split("* Menu:")[0].split("---------- Footnotes")[0]
    lines = body.strip().splitlines()
    if len(lines) > 1 and re.fullmatch(r"[*=\-.]+", lines[1].strip()):
        lines = lines[2:]  # the node title and its underline
    paras = [p for p in paragraphs("\n".join(lines)) if not p.startswith("‘") or len(p) > 80]
    asks = [f"According to the GNU {manual} manual, what is '{node}' about?",
            f"Explain the '{node}' section of the {manual} Info manual."]
    return asks, trim(paras)


# ---------------------------------------------------------------- domain: licence texts

SECTION_RE = re.compile(r"^\s*(?:Section\s+)?(\d+(?:\.\d+)*)\.\s+(.*)$")


def _heading(first: str) -> tuple[str, bool] | None:
    """(label, title_only) of a numbered paragraph: '4. Conveying Verbatim Copies.' is title-only,
    '2. Grant of Copyright License. Subject to ...' is titled, '0. This License applies ...' is not."""
    m = SECTION_RE.match(first)
    if not m:
        return None
    rest = m.group(2).strip()
    title = rest.split(". ")[0].rstrip(".")
    if len(title.split()) > 8 or title.isupper() or title.endswith((",", ";")) or (
            title != rest.rstrip(".") and ". " not in rest):
        return f"section {m.group(1)}", False
    return f"section {m.group(1)} ('{title}')", title == rest.rstrip(".")


def license_items() -> Iterator[tuple[str, Callable]]:
    seen = set()
    for path in sorted(Path("/usr/share/common-licenses").iterdir()):
        real = path.resolve()
        if real in seen or not real.is_file():
            continue
        seen.add(real)
        chunks: list[tuple[str, list[str]]] = [("preamble", [])]
        for para in re.split(r"\n\s*\n", real.read_text(errors="replace")):
            first = para.strip().splitlines()[0] if para.strip() else ""
            head = _heading(first)
            if head:
                chunks.append((head[0], []))
                if head[1]:
                    para = para.strip()[len(first):]  # drop the title line itself
            chunks[-1][1].append(para)
        for label, parts in chunks:
            yield f"{real.name} {label}", (lambda n=real.name, lab=label, p=parts: license_row(n, lab, p))


def license_row(name: str, label: str, parts: list[str]) -> tuple[list[str], str] | None:
    paras = paragraphs("\n\n".join(parts))
    if label == "preamble":
        asks = [f"How does the {name} licence text begin?", f"What does the opening of the {name} licence say?"]
    else:
        asks = [f"What does {label} of the {name} licence say?", f"Summarise {label} of the {name} licence."]
    return asks, trim(paras)


DOMAINS: dict[str, tuple[Callable[[], Iterator], str]] = {
    "python_docs": (python_items, f"docstrings of the Python {platform.python_version()} standard library"),
    "man_pages": (man_items, "man pages in /usr/share/man/man{1,5,7,8} (gcloud_* excluded), rendered by man(1)"),
    "debian_packages": (dpkg_items, "Description fields of /var/lib/dpkg/status"),
    "debian_changelogs": (changelog_items, "newest 4 entries of /usr/share/doc/*/changelog.Debian.gz"),
    "gnu_info": (info_items, "nodes of the GNU Info manuals in /usr/share/info"),
    "licenses": (license_items, "sections of the licence texts in /usr/share/common-licenses"),
}
