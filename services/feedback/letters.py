"""The reply letter to a deputy (建议) or CPPCC member (提案), as a .docx in the bureau's formal layout.

Layout after GB/T 9704 (党政机关公文格式): A4, margins 37/35/28/26 mm, title in
小标宋 二号 centred, body in 仿宋 三号 with a fixed 28 pt line and two-character
first-line indent, issuing unit and date (Arabic numerals, no leading zeros)
at the right.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from typing import Any

from docx import Document
from docx.enum.text import WD_ALIGN_PARAGRAPH, WD_LINE_SPACING
from docx.oxml.ns import qn
from docx.shared import Mm, Pt

DOCX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

TITLE_FONT = "方正小标宋简体"
BODY_FONT = "仿宋_GB2312"
TITLE_SIZE = Pt(22)  # 二号
BODY_SIZE = Pt(16)  # 三号
LINE = Pt(28)

CLASSIFICATION_LABELS = {
    "A": "A类（所提问题已经解决或基本解决）",
    "B": "B类（所提问题正在解决或已列入计划逐步解决）",
    "C": "C类（所提问题因条件限制需以后解决）",
    "D": "D类（所提问题因政策等原因无法解决，留作参考）",
}


@dataclass(frozen=True)
class LetterContent:
    kind: str  # npc_suggestion, cppcc_proposal
    session: str
    number: str
    suggestion_title: str
    member_name: str
    body: str
    classification: str | None
    issuing_unit: str
    issued_on: date
    contact_name: str = ""
    contact_phone: str = ""
    follow_up: bool = False

    @property
    def noun(self) -> str:
        return "提案" if self.kind == "cppcc_proposal" else "建议"

    @property
    def title(self) -> str:
        if self.follow_up:
            return f"关于{self.session}第{self.number}号{self.noun}办理落实情况的答复"
        return f"关于{self.session}第{self.number}号{self.noun}的答复"

    @property
    def salutation(self) -> str:
        return f"{self.member_name}{'委员' if self.kind == 'cppcc_proposal' else '代表'}："

    @property
    def opening(self) -> str:
        if self.follow_up:
            return f"您提出的《{self.suggestion_title}》，我们前期已作答复。现将有关事项的落实情况答复如下："
        return f"您提出的《{self.suggestion_title}》收悉。经认真研究办理，现答复如下："

    @property
    def classification_line(self) -> str | None:
        if not self.classification:
            return None
        return f"办理类别：{CLASSIFICATION_LABELS.get(self.classification, self.classification + '类')}"

    @property
    def date_line(self) -> str:
        return f"{self.issued_on.year}年{self.issued_on.month}月{self.issued_on.day}日"

    def paragraphs(self) -> list[str]:
        """The letter as plain text paragraphs, in order (also what a test or a preview reads)."""
        lines = [self.title, self.salutation, self.opening]
        lines += [p.strip() for p in self.body.splitlines() if p.strip()]
        if self.classification_line:
            lines.append(self.classification_line)
        lines += ["感谢您对公安工作的关心和支持！", self.issuing_unit, self.date_line]
        if self.contact_name:
            lines.append(f"联系人：{self.contact_name}")
        if self.contact_phone:
            lines.append(f"联系电话：{self.contact_phone}")
        return lines


def _style_run(run: Any, *, font: str, size: Pt, bold: bool = False) -> None:
    run.font.name = font
    run.font.size = size
    run.font.bold = bold
    # Word picks the font for Chinese characters from eastAsia, which font.name does not set.
    run._element.get_or_add_rPr().get_or_add_rFonts().set(qn("w:eastAsia"), font)


def _paragraph(
    document: Any,
    text: str,
    *,
    font: str = BODY_FONT,
    size: Pt = BODY_SIZE,
    align: Any = None,
    indent: bool = False,
    bold: bool = False,
) -> None:
    paragraph = document.add_paragraph()
    fmt = paragraph.paragraph_format
    fmt.line_spacing_rule = WD_LINE_SPACING.EXACTLY
    fmt.line_spacing = LINE
    fmt.space_before = Pt(0)
    fmt.space_after = Pt(0)
    if indent:
        fmt.first_line_indent = Pt(size.pt * 2)
    if align is not None:
        paragraph.alignment = align
    if text:
        _style_run(paragraph.add_run(text), font=font, size=size, bold=bold)


def render_docx(content: LetterContent) -> bytes:
    document = Document()
    section = document.sections[0]
    section.page_width, section.page_height = Mm(210), Mm(297)
    section.top_margin, section.bottom_margin = Mm(37), Mm(35)
    section.left_margin, section.right_margin = Mm(28), Mm(26)
    properties = document.core_properties
    properties.title = content.title
    properties.author = content.issuing_unit

    _paragraph(document, content.title, font=TITLE_FONT, size=TITLE_SIZE, align=WD_ALIGN_PARAGRAPH.CENTER)
    _paragraph(document, "")
    _paragraph(document, content.salutation)
    _paragraph(document, content.opening, indent=True)
    for text in (p.strip() for p in content.body.splitlines()):
        if text:
            _paragraph(document, text, indent=True)
    if content.classification_line:
        _paragraph(document, content.classification_line, indent=True)
    _paragraph(document, "感谢您对公安工作的关心和支持！", indent=True)
    _paragraph(document, "")
    _paragraph(document, "")
    _paragraph(document, content.issuing_unit, align=WD_ALIGN_PARAGRAPH.RIGHT)
    _paragraph(document, content.date_line, align=WD_ALIGN_PARAGRAPH.RIGHT)
    if content.contact_name or content.contact_phone:
        _paragraph(document, "")
        if content.contact_name:
            _paragraph(document, f"联系人：{content.contact_name}")
        if content.contact_phone:
            _paragraph(document, f"联系电话：{content.contact_phone}")

    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()
