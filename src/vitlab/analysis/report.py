"""The report of ``vitlab analyze``, written from one list of sections as Markdown
(``report.md``, pictures linked as the PNG files next to it) and as one
self-contained HTML5 page (``report.html``: every picture inline as a base64
``data:`` URI, the style inline, no script, nothing fetched), so the two
cannot say different things.

A section is a heading (text between backticks is code) and a list of blocks: ``Text`` (a paragraph; text
between backticks is code), ``Items`` (a bulleted list), ``Picture`` (a PNG
file), ``Table`` and ``Preformatted`` (text shown as it is, such as a model
card). All text is escaped for the format it is written in: a class name is
shown as it is spelled, whatever characters it holds.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from ..files import atomic_write


@dataclass
class Text:
    text: str  # `...` spans are code


@dataclass
class Items:
    items: list[str]  # each like Text


@dataclass
class Picture:
    path: Path  # a PNG in the report's folder
    caption: str


@dataclass
class Table:
    columns: list[str]
    rows: list[list]
    right: Sequence[int] = ()  # indices of right-aligned (numeric) columns


@dataclass
class Preformatted:
    text: str


Block = Union[Text, Items, Picture, Table, Preformatted]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2  # 2: a section, 3: a subsection


def write_report(folder: str | Path, title: str, intro: list[Block], sections: list[Section],
                 stem: str = "report") -> tuple[Path, Path]:
    """Write ``folder/report.md`` and ``folder/report.html`` (atomically); returns both paths."""
    folder = Path(folder)
    md_path, html_path = folder / f"{stem}.md", folder / f"{stem}.html"
    md, page = to_markdown(title, intro, sections, folder), to_html(title, intro, sections)
    atomic_write(md_path, lambda f: f.write(md.encode("utf-8")))
    atomic_write(html_path, lambda f: f.write(page.encode("utf-8")))
    return md_path, html_path


# ------------------------------------------------------------------------------------------------ Markdown
def to_markdown(title: str, intro: list[Block], sections: list[Section], folder: str | Path = ".") -> str:
    """The report as Markdown; pictures are linked relative to ``folder``."""
    lines = [f"# {_md_inline(title)}", ""]
    for block in intro:
        lines += _md_block(block, Path(folder))
    for s in sections:
        lines += [f"{'#' * s.level} {_md_inline(s.title)}", ""]
        for block in s.blocks:
            lines += _md_block(block, Path(folder))
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def _md_block(block: Block, folder: Path) -> list[str]:
    if isinstance(block, Text):
        return [_md_inline(block.text), ""]
    if isinstance(block, Items):
        return [f"- {_md_inline(item)}" for item in block.items] + [""]
    if isinstance(block, Picture):
        target = block.path.relative_to(folder) if block.path.is_relative_to(folder) else block.path
        return [f"![{_md_text(block.caption)}]({target.as_posix()})", ""]
    if isinstance(block, Table):
        right = set(block.right)
        lines = ["| " + " | ".join(_md_cell(c) for c in block.columns) + " |",
                 "|" + "|".join("---:" if i in right else "---" for i in range(len(block.columns))) + "|"]
        lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in block.rows]
        return lines + [""]
    if isinstance(block, Preformatted):  # an indented code block: no fence inside the text can end it
        return ["    " + line if line.strip() else "" for line in block.text.splitlines()] + [""]
    raise TypeError(f"not a report block: {block!r}")


def _md_text(text: str) -> str:
    """Plain text for Markdown: characters that would start markup are escaped (an
    underscore only where it could, not inside a word such as ``train_loss``)."""
    return re.sub(r"[\\`*\[\]<>|]|(?<![^\W_])_|_(?![^\W_])", lambda m: "\\" + m.group(0), str(text))


def _md_inline(text: str) -> str:
    return "".join(f"`{part}`" if code else _md_text(part) for code, part in _spans(text))


def _md_cell(value) -> str:
    return _md_text(str(value)).replace("\n", " ")


# ------------------------------------------------------------------------------------------------ HTML
_STYLE = """
body { font-family: "DejaVu Sans", "Noto Sans", "Noto Sans CJK JP", sans-serif; max-width: 72rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.45; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figure { margin: 1rem 0; }
figcaption { font-size: 0.85rem; color: #555; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; }
th { background: #f3f3f3; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 0.75rem; overflow-x: auto; white-space: pre-wrap; }
code { background: #f3f3f3; padding: 0 0.2rem; }
"""


def to_html(title: str, intro: list[Block], sections: list[Section]) -> str:
    """The report as one HTML5 page with every picture inline."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_h(title.replace('`', ''))}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
           f"<h1>{_html_inline(title)}</h1>"]
    for block in intro:
        out += _html_block(block)
    for s in sections:
        out.append(f"<h{s.level}>{_html_inline(s.title)}</h{s.level}>")
        for block in s.blocks:
            out += _html_block(block)
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _html_block(block: Block) -> list[str]:
    if isinstance(block, Text):
        return [f"<p>{_html_inline(block.text)}</p>"]
    if isinstance(block, Items):
        return ["<ul>", *(f"<li>{_html_inline(item)}</li>" for item in block.items), "</ul>"]
    if isinstance(block, Picture):
        data = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
        return ["<figure>", f'<img src="data:image/png;base64,{data}" alt="{_h(block.caption)}">',
                f"<figcaption>{_h(block.caption)} ({_h(Path(block.path).name)})</figcaption>", "</figure>"]
    if isinstance(block, Table):
        right = set(block.right)

        def cells(values, tag):
            return "".join(f"<{tag}{_NUM if i in right else ''}>{_h(v)}</{tag}>" for i, v in enumerate(values))
        return ["<table>", f"<thead><tr>{cells(block.columns, 'th')}</tr></thead>", "<tbody>",
                *(f"<tr>{cells(row, 'td')}</tr>" for row in block.rows), "</tbody>", "</table>"]
    if isinstance(block, Preformatted):
        return [f"<pre>{_h(block.text)}</pre>"]
    raise TypeError(f"not a report block: {block!r}")


_NUM = ' class="num"'


def _h(value) -> str:
    return html.escape(str(value), quote=True)


def _html_inline(text: str) -> str:
    return "".join(f"<code>{_h(part)}</code>" if code else _h(part) for code, part in _spans(text))


def _spans(text: str) -> list[tuple[bool, str]]:
    """``text`` cut into (is_code, part): code is what stands between a pair of backticks."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: all plain text
        return [(False, str(text))]
    return [(i % 2 == 1, p) for i, p in enumerate(parts) if p]
