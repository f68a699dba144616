"""A report as PDF (fpdf2): landscape US Letter, a heading on every page naming the clinic,
the report, its filters and when it was generated, then the table.

Core fonts only (no font files to ship): they cover Latin-1, so every string goes through
``latin1`` and anything else prints as "?". Rows are laid out by hand, not with
``FPDF.table``, which is about 15x slower (5,000 rows: ~1 s instead of ~15 s).
"""

from __future__ import annotations

from collections.abc import Iterable

from fpdf import FPDF

from audit.models import AuditEvent
from audit.reports.columns import Column, row_cells

FONT = "Helvetica"
BODY_SIZE = 7
LINE_HEIGHT = 3.4
MAX_LINES = 3  # per cell; longer values end in "..." (the CSV has them whole)


def latin1(text: str) -> str:
    text = " ".join(str(text).split())  # no newlines or tabs inside a cell
    return text.encode("latin-1", "replace").decode("latin-1")


class _ReportPdf(FPDF):
    def __init__(self, *, title: str, heading: list[str], columns: list[Column]):
        super().__init__(orientation="L", unit="mm", format="letter")
        self.report_title, self.heading, self.columns = latin1(title), [latin1(h) for h in heading], columns
        self.set_margins(10, 10, 10)
        self.set_auto_page_break(False)
        spare = max(self.epw - sum(c.pdf_width for c in columns), 0)
        grow = sum(c.pdf_grow for c in columns) or 1
        self.widths = [c.pdf_width + spare * c.pdf_grow / grow for c in columns]
        if sum(self.widths) > self.epw:  # too many columns for their natural widths: shrink all
            self.widths = [w * self.epw / sum(self.widths) for w in self.widths]
        self.set_title(self.report_title)
        self.set_creator("Caretext")

    def header(self) -> None:
        self.set_font(FONT, "B", 13)
        self.cell(0, 7, self.report_title, new_x="LMARGIN", new_y="NEXT")
        self.set_font(FONT, "", 8.5)
        for line in self.heading:
            self.cell(0, 4.5, line, new_x="LMARGIN", new_y="NEXT")
        self.ln(2)
        self.set_font(FONT, "B", BODY_SIZE)
        self.set_fill_color(232, 238, 243)
        for column, width in zip(self.columns, self.widths, strict=True):
            self.cell(width, 5.5, latin1(column.title), fill=True)
        self.ln(5.5)
        self.set_font(FONT, "", BODY_SIZE)

    def footer(self) -> None:
        self.set_y(-9)
        self.set_font(FONT, "", 7)
        self.cell(0, 4, f"{self.report_title} - page {self.page_no()} of {{nb}}", align="R")

    # Text measuring straight from the core font's width table: FPDF.get_string_width copies
    # the graphics state on every call and dominated the render time.
    def _width(self, text: str) -> float:
        widths = self.current_font.cw
        return sum(widths.get(ch, 600) for ch in text) * self.font_size / 1000

    def _break_word(self, word: str, room: float) -> tuple[str, str]:
        cut = 1
        while cut < len(word) and self._width(word[: cut + 1]) <= room:
            cut += 1
        return word[:cut], word[cut:]

    def wrap(self, text: str, width: float) -> list[str]:
        room = width - 2 * self.c_margin
        lines: list[str] = []
        line = ""
        for word in text.split(" "):
            candidate = f"{line} {word}" if line else word
            if self._width(candidate) <= room:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = word
            while self._width(line) > room and len(lines) <= MAX_LINES:
                head, line = self._break_word(line, room)
                lines.append(head)
        lines.append(line)
        if len(lines) > MAX_LINES:
            lines = lines[:MAX_LINES]
            lines[-1] = self._break_word(lines[-1] + " ", room - self._width("..."))[0].rstrip() + "..."
        return lines

    def row(self, cells: list[str]) -> None:
        wrapped = [self.wrap(latin1(text), width) for text, width in zip(cells, self.widths, strict=True)]
        height = max(len(lines) for lines in wrapped) * LINE_HEIGHT + 1
        if self.get_y() + height > self.h - 12:
            self.add_page()
        top, x = self.get_y(), self.l_margin
        for lines, width in zip(wrapped, self.widths, strict=True):
            for index, text in enumerate(lines):
                self.set_xy(x, top + 0.5 + index * LINE_HEIGHT)
                self.cell(width, LINE_HEIGHT, text)
            x += width
        self.set_draw_color(216, 222, 230)
        self.line(self.l_margin, top + height, self.l_margin + self.epw, top + height)
        self.set_xy(self.l_margin, top + height)


def render_pdf(*, title: str, heading: list[str], columns: list[Column], events: Iterable[AuditEvent],
               zone) -> tuple[bytes, int]:
    """(PDF bytes, number of event rows)."""
    pdf = _ReportPdf(title=title, heading=heading, columns=columns)
    pdf.add_page()
    count = 0
    for event in events:
        pdf.row(row_cells(columns, event, zone))
        count += 1
    if count == 0:
        pdf.ln(3)
        pdf.cell(0, 6, "No events match these filters.")
    return bytes(pdf.output()), count
