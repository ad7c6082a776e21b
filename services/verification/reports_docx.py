"""The 督察工作通报 as a .docx: the formal layout of the reply letters (GB/T 9704 margins and fonts),
the five sections with their tables, and the charts as images."""

from __future__ import annotations

import io
from collections.abc import Sequence

from docx import Document
from docx.document import Document as DocumentObject
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.oxml.ns import qn
from docx.shared import Mm, Pt
from docx.text.paragraph import Paragraph

from services.verification.reports import ReportContent, percent
from services.verification.reports_charts import Chart

TITLE_FONT = "方正小标宋简体"
HEADING_FONT = "黑体"
BODY_FONT = "仿宋_GB2312"
TABLE_FONT = "宋体"
RATING_COUNTS = (("satisfied", "满意"), ("basically_satisfied", "基本满意"), ("dissatisfied", "不满意"))


def _font(run_or_style: object, name: str, size: float, *, bold: bool = False) -> None:
    font = run_or_style.font  # type: ignore[attr-defined]
    font.name = name
    font.size = Pt(size)
    font.bold = bold
    element = run_or_style.element if hasattr(run_or_style, "element") else run_or_style._element  # type: ignore[attr-defined]
    properties = element.get_or_add_rPr()
    fonts = properties.find(qn("w:rFonts"))
    if fonts is None:
        fonts = properties.makeelement(qn("w:rFonts"), {})
        properties.append(fonts)
    fonts.set(qn("w:eastAsia"), name)


def _paragraph(
    document: DocumentObject,
    text: str,
    *,
    font: str = BODY_FONT,
    size: float = 16,
    bold: bool = False,
    indent: bool = True,
    align: WD_ALIGN_PARAGRAPH | None = None,
) -> Paragraph:
    paragraph = document.add_paragraph()
    if indent:
        paragraph.paragraph_format.first_line_indent = Pt(size * 2)
    if align is not None:
        paragraph.alignment = align
    paragraph.paragraph_format.space_after = Pt(0)
    paragraph.paragraph_format.line_spacing = Pt(28)
    _font(paragraph.add_run(text), font, size, bold=bold)
    return paragraph


def _table(document: DocumentObject, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = document.add_table(rows=1, cols=len(headers))
    table.style = "Table Grid"
    table.alignment = WD_TABLE_ALIGNMENT.CENTER
    for cell, header in zip(table.rows[0].cells, headers, strict=True):
        cell.text = ""
        _font(cell.paragraphs[0].add_run(header), TABLE_FONT, 9, bold=True)
        cell.paragraphs[0].alignment = WD_ALIGN_PARAGRAPH.CENTER
    for values in rows:
        cells = table.add_row().cells
        for cell, value in zip(cells, values, strict=True):
            _font(cell.paragraphs[0].add_run(str(value)), TABLE_FONT, 9)
            cell.paragraphs[0].alignment = WD_ALIGN_PARAGRAPH.CENTER
    document.add_paragraph()


def _chart(document: DocumentObject, chart: Chart) -> None:
    document.add_picture(io.BytesIO(chart.png), width=Mm(150))
    document.paragraphs[-1].alignment = WD_ALIGN_PARAGRAPH.CENTER
    _paragraph(
        document, chart.caption, font=TABLE_FONT, size=10, indent=False, align=WD_ALIGN_PARAGRAPH.CENTER
    )


def document(content: ReportContent, charts: Sequence[Chart]) -> bytes:
    document = Document()
    section = document.sections[0]
    section.page_width, section.page_height = Mm(210), Mm(297)
    section.top_margin, section.bottom_margin = Mm(37), Mm(35)
    section.left_margin, section.right_margin = Mm(28), Mm(26)
    _heading(document, content)
    _overall(document, content)
    _groups(document, content, charts)
    _supervision(document, content)
    _satisfaction(document, content)
    _demands(document, content)
    _paragraph(document, "", indent=False)
    _paragraph(document, content.issuing_unit, indent=False, align=WD_ALIGN_PARAGRAPH.RIGHT)
    issued = content.issued_on
    _paragraph(
        document,
        f"{issued.year}年{issued.month}月{issued.day}日",
        indent=False,
        align=WD_ALIGN_PARAGRAPH.RIGHT,
    )
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _heading(document: DocumentObject, content: ReportContent) -> None:
    _paragraph(
        document, content.title, font=TITLE_FONT, size=22, indent=False, align=WD_ALIGN_PARAGRAPH.CENTER
    )
    _paragraph(
        document,
        f"（{content.period.label}　{content.scope_name}）",
        indent=False,
        align=WD_ALIGN_PARAGRAPH.CENTER,
    )
    _paragraph(
        document,
        f"{content.issuing_unit}　{content.issued_on.year}年{content.issued_on.month}月{content.issued_on.day}日",
        size=14,
        indent=False,
        align=WD_ALIGN_PARAGRAPH.CENTER,
    )


def _overall(document: DocumentObject, content: ReportContent) -> None:
    counts, rates = content.total.counts, content.total.rates
    _paragraph(document, "一、总体情况", font=HEADING_FONT)
    figures = "，".join(f"{d.name}{percent(rates.get(d.key))}" for d in content.measures.definitions)
    _paragraph(
        document,
        f"{content.period.label}，{content.scope_name}共受理投诉及建议提案{counts.get('received', 0)}件，"
        f"截至统计期末已办结{counts.get('concluded', 0)}件，其中按期办结{counts.get('concluded_on_time', 0)}件。"
        f"主要考核指标：{figures}。",
    )
    _table(
        document,
        ["指标", "分子", "分母", "比率"],
        [
            [d.name, counts.get(d.numerator, 0), counts.get(d.denominator, 0), percent(rates.get(d.key))]
            for d in content.measures.definitions
        ],
    )
    _paragraph(document, "注：", font=TABLE_FONT, size=10, indent=False)
    for definition in content.measures.definitions:
        _paragraph(
            document, f"{definition.name}：{definition.definition}", font=TABLE_FONT, size=10, indent=False
        )


def _groups(document: DocumentObject, content: ReportContent, charts: Sequence[Chart]) -> None:
    heading = "二、各督察队情况" if content.by == "team" else "二、各县（市、区）情况"
    _paragraph(document, heading, font=HEADING_FONT)
    definitions = content.measures.definitions
    rows = [
        [g.name, g.counts.get("received", 0), g.counts.get("concluded", 0)]
        + [percent(g.rates.get(d.key)) for d in definitions]
        for g in [*content.measures.groups, content.total]
    ]
    _table(document, ["单位", "受理", "办结", *[d.name for d in definitions]], rows)
    for chart in charts:
        _chart(document, chart)


def _supervision(document: DocumentObject, content: ReportContent) -> None:
    _paragraph(document, "三、超期和督办情况", font=HEADING_FONT)
    total = content.supervision_total
    steps = "，".join(f"{label}{total.overdue.get(step, 0)}件" for step, label in content.step_labels.items())
    _paragraph(
        document,
        f"截至通报生成时，超期未办结事项{total.overdue_total}件（按已到督办级别：{steps}）；"
        f"受理超过{content.long_pending_days}日仍未办结{total.long_pending}件；"
        f"列入督办件{total.supervised}件，领导包案{total.leader_assigned}件。",
    )
    labels = list(content.step_labels.values())
    _table(
        document,
        ["单位", *labels, "超期合计", f"受理超{content.long_pending_days}日未结", "督办件", "领导包案"],
        [
            [
                g.name,
                *[g.overdue.get(s, 0) for s in content.step_labels],
                g.overdue_total,
                g.long_pending,
                g.supervised,
                g.leader_assigned,
            ]
            for g in [*content.supervision, total]
        ],
    )
    if content.marked:
        _paragraph(document, "督办件和领导包案事项：", indent=False)
        _table(
            document,
            ["查询码", "事项", "县（市、区）", "标记", "包案领导", "标记日期"],
            [
                [m.tracking_code, m.title, m.group, m.mark, m.leader, m.marked_on.isoformat()]
                for m in content.marked
            ],
        )


def _satisfaction(document: DocumentObject, content: ReportContent) -> None:
    _paragraph(document, "四、群众满意度", font=HEADING_FONT)
    counts = content.total.counts
    parts = "，".join(f"{label}{counts.get(key, 0)}件" for key, label in RATING_COUNTS)
    _paragraph(
        document,
        f"{content.period.label}共收到群众评价{counts.get('rated', 0)}件，其中{parts}，"
        f"满意率{percent(content.total.rates.get('satisfaction_rate'))}。",
    )
    _table(
        document,
        ["单位", "评价", *[label for _, label in RATING_COUNTS], "满意率"],
        [
            [
                g.name,
                g.counts.get("rated", 0),
                *[g.counts.get(key, 0) for key, _ in RATING_COUNTS],
                percent(g.rates.get("satisfaction_rate")),
            ]
            for g in [*content.measures.groups, content.total]
        ],
    )


def _demands(document: DocumentObject, content: ReportContent) -> None:
    _paragraph(document, "五、存在的问题和工作要求", font=HEADING_FONT)
    for number, sentence in enumerate(content.problems, start=1):
        _paragraph(document, f"{number}. {sentence}")
