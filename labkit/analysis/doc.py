"""A small document model for reports: headings, paragraphs, tables and figures, written as Markdown and HTML.

The Markdown is the source; the HTML is the same Markdown rendered by markdown-it-py (CommonMark plus
tables) inside a self-contained page with a little CSS. Figures are files next to the documents
(``figures/*.png`` or ``.svg``); tables are also written as CSV (``tables/*.csv``) for further use.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0 1.4em; font-size: .86em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; } th { background: #f3f3f3; }
td { font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f3f3f3; padding: 0 .2em; }
blockquote { border-left: 4px solid #e0a800; margin-left: 0; padding: .2em 1em; background: #fff8e1; }
"""


@dataclass
class Document:
    title: str
    blocks: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def h(self, text: str, level: int = 2) -> None:
        self.blocks.append("#" * level + " " + text)

    def p(self, text: str) -> None:
        self.blocks.append(text.strip())

    def bullets(self, items) -> None:
        items = list(items)
        if items:
            self.blocks.append("\n".join(f"- {escape_inline(str(i))}" for i in items))

    def warn(self, text: str) -> None:
        self.blocks.append("> " + text.strip().replace("\n", "\n> "))

    def table(self, df: pd.DataFrame, name: str | None = None, caption: str | None = None,
              raw: pd.DataFrame | None = None) -> None:
        """``df`` holds display strings; ``raw`` (or ``df``) is saved as tables/<name>.csv."""
        if caption:
            self.blocks.append(f"*{caption}*")
        if df is None or df.empty:
            self.blocks.append("*(no data)*")
            return
        self.blocks.append(markdown_table(df))
        if name:
            self.tables[name] = raw if raw is not None else df

    def figure(self, rel_path: str | None, caption: str) -> None:
        if rel_path:
            self.blocks.append(f"![{escape_inline(caption)}]({rel_path})\n\n*{caption}*")

    def markdown(self) -> str:
        return f"# {self.title}\n\n" + "\n\n".join(self.blocks) + "\n"

    def write(self, out_dir: Path, stem: str) -> tuple[Path, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        md = self.markdown()
        md_path = out_dir / f"{stem}.md"
        md_path.write_text(md, encoding="utf-8")
        html_path = out_dir / f"{stem}.html"
        html_path.write_text(to_html(md, self.title), encoding="utf-8")
        if self.tables:
            tdir = out_dir / "tables"
            tdir.mkdir(exist_ok=True)
            for name, frame in self.tables.items():
                frame.to_csv(tdir / f"{name}.csv", index=False)
        return md_path, html_path


def escape_inline(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_NUMERIC = re.compile(r"^[-+−]?[\d,]*\.?\d+(e[-+]?\d+)?( ?[%a-zA-Z/]+)?$|^—$|^[-\d.]+–[-\d.]+$")


def markdown_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    rows = [[escape_inline("" if v is None else str(v)) for v in r] for r in df.itertuples(index=False)]
    align = []
    for j in range(len(cols)):
        vals = [r[j] for r in rows if r[j]]
        align.append("---:" if vals and all(_NUMERIC.match(v) for v in vals) else "---")
    lines = ["| " + " | ".join(escape_inline(c) for c in cols) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def to_html(md: str, title: str) -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}</body></html>\n")
