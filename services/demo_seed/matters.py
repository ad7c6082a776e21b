"""The demo matters: who complains about what, and how far each gets; the suggestions; the findings.

The people are fictional; the places are real places of Zhoukou (周口市), Henan.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.workcalendar import SHANGHAI


class Stage(StrEnum):
    """What happens to each matter after it is recorded."""

    NEW = "new"
    CLAIMED = "claimed"
    OVERDUE = "overdue"
    EXTENSION = "extension"
    IN_REVIEW = "in_review"
    PENDING_ANSWER = "pending_answer"
    ANSWERED = "answered"
    CLOSED = "closed"
    REOPENED = "reopened"


def _ago(days: float, hour: int = 9, minute: int = 30) -> str:
    now = datetime.now(SHANGHAI)
    moment = (now - timedelta(days=days)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    # "Today at 9:30" before half past nine would lie in the future, which intake refuses.
    return min(moment, now - timedelta(minutes=20)).isoformat()


def _complaint(
    *,
    name: str | None,
    phone: str | None,
    unit: str,
    county: str,
    category: str,
    account: str,
    days_ago: float,
    officer: str | None = None,
    badge: str | None = None,
    place: str | None = None,
    channel: str = "phone",
) -> dict[str, Any]:
    return {
        "channel": channel,
        "received_at": _ago(days_ago),
        "complainant": {"anonymous": True}
        if name is None
        else {"anonymous": False, "name": name, "phone": phone},
        "accused": {"unit": unit, "county_code": county, "officer_name": officer, "badge_no": badge},
        "category": category,
        "incident_at": _ago(days_ago + 2, hour=20),
        "place": place,
        "account": account,
    }


COMPLAINTS: list[tuple[Stage, dict[str, Any]]] = [
    (
        Stage.NEW,
        _complaint(
            name="刘桂兰",
            phone="13903941205",
            unit="周口市公安局川汇分局人和派出所",
            county="411602",
            category="态度粗暴",
            days_ago=0,
            officer="值班民警",
            place="川汇区人和街道办事处附近",
            account="我到派出所办理户口迁移，窗口民警不耐烦，说话很冲，让我回去等通知，也没说需要补什么材料。",
        ),
    ),
    (
        Stage.NEW,
        _complaint(
            name=None,
            phone=None,
            unit="鹿邑县公安局交警大队",
            county="411628",
            category="不作为",
            days_ago=1,
            place="鹿邑县真源大道与紫气大道交叉口",
            account="这个路口早晚高峰长期拥堵，多次打电话反映，一直没有交警来疏导。",
            channel="web",
        ),
    ),
    (
        Stage.CLAIMED,
        _complaint(
            name="陈志强",
            phone="13803945517",
            unit="项城市公安局花园派出所",
            county="411681",
            category="执法不规范",
            days_ago=4,
            officer="王某",
            badge="041877",
            place="项城市莲花大道",
            account="我的电动车被扣，民警没有出具任何手续，问他依据什么也不说，至今车还没还。",
        ),
    ),
    (
        Stage.OVERDUE,
        _complaint(
            name="赵海燕",
            phone="15803948862",
            unit="商水县公安局城关派出所",
            county="411623",
            category="久拖不决",
            days_ago=41,
            place="商水县城关乡",
            account="去年被人打伤报案后，派出所一直说在调查，已经大半年了没有任何结果，我多次询问都没人答复。",
        ),
    ),
    (
        Stage.OVERDUE,
        _complaint(
            name="孙建军",
            phone="13703942290",
            unit="太康县公安局城关派出所",
            county="411627",
            category="不作为",
            days_ago=33,
            place="太康县城关镇",
            account="邻居私搭乱建堵住通道，报警后出警民警只说是民事纠纷，让我们自己协商，没有任何处理。",
        ),
    ),
    (
        Stage.EXTENSION,
        _complaint(
            name="周丽",
            phone="18703941138",
            unit="西华县公安局交警大队",
            county="411622",
            category="执法不规范",
            days_ago=9,
            officer="张某",
            place="西华县箕子台路",
            account="我的车停在路边被贴罚单，当时车旁有人，民警没有提醒就直接开单，我认为处罚不当。",
        ),
    ),
    (
        Stage.IN_REVIEW,
        _complaint(
            name="黄德明",
            phone="13938789015",
            unit="沈丘县公安局槐店派出所",
            county="411624",
            category="吃拿卡要",
            days_ago=8,
            officer="刘某",
            place="沈丘县槐店回族镇",
            account="办理营业执照相关的证明时，派出所有人暗示要给好处才能尽快办，我没给，到现在还没办下来。",
        ),
    ),
    (
        Stage.PENDING_ANSWER,
        _complaint(
            name="马秀英",
            phone="15093947726",
            unit="周口市公安局淮阳分局城关派出所",
            county="411603",
            category="态度粗暴",
            days_ago=12,
            place="淮阳区城关镇",
            account="去派出所开无犯罪记录证明，民警态度冷淡，让我来回跑了三趟。",
        ),
    ),
    (
        Stage.ANSWERED,
        _complaint(
            name="吴国庆",
            phone="13603946651",
            unit="郸城县公安局洺北派出所",
            county="411625",
            category="执法不规范",
            days_ago=16,
            officer="李某",
            badge="042215",
            place="郸城县洺北街道",
            account="因邻里纠纷我被带到派出所，询问时民警没有出示证件，也没有告知我的权利。",
        ),
    ),
    (
        Stage.CLOSED,
        _complaint(
            name="郑红梅",
            phone="13523941987",
            unit="扶沟县公安局城关派出所",
            county="411621",
            category="不作为",
            days_ago=20,
            place="扶沟县城关镇",
            account="家中被盗后报警，民警出警很慢，两个小时才到现场。",
        ),
    ),
    (
        Stage.REOPENED,
        _complaint(
            name="何永军",
            phone="13838698443",
            unit="周口市公安局川汇分局陈州派出所",
            county="411602",
            category="执法不规范",
            days_ago=22,
            officer="赵某",
            place="川汇区陈州街道",
            account="我因交通事故纠纷到派出所，民警偏袒对方，笔录内容与我说的不一致，我要求更正被拒绝。",
        ),
    ),
    (
        Stage.NEW,
        _complaint(
            name="陈志强",
            phone="13803945517",
            unit="项城市公安局花园派出所",
            county="411681",
            category="态度粗暴",
            days_ago=0.2,
            place="项城市莲花大道",
            account="我再次去派出所询问扣车的事，接待民警态度恶劣，还说再来闹就把我也扣下。",
        ),
    ),
]

SUGGESTIONS: list[tuple[Stage, dict[str, Any]]] = [
    (
        Stage.ANSWERED,
        {
            "kind": "npc_suggestion",
            "session": "周口市第五届人民代表大会第三次会议",
            "number": "0087",
            "title": "关于在城区学校周边增设交通安全警示设施的建议",
            "text": "建议公安交警部门在川汇区城区中小学周边增设减速带、警示标志和上下学时段护学岗，保障学生出行安全。",
            "deputy": {
                "name": "马刚",
                "delegation": "川汇区代表团",
                "phone": "13800000101",
                "account": "deputy1",
            },
            "co_signers": ["李红", "张伟"],
            "lead_unit": "周口市公安局",
            "co_units": [],
            "received_at": _ago(50),
        },
    ),
    (
        Stage.CLAIMED,
        {
            "kind": "npc_suggestion",
            "session": "周口市第五届人民代表大会第三次会议",
            "number": "0112",
            "title": "关于进一步规范派出所窗口服务的建议",
            "text": "建议推行派出所窗口服务一次性告知制度，公开办事指南，减少群众往返。",
            "deputy": {
                "name": "马刚",
                "delegation": "川汇区代表团",
                "phone": "13800000101",
                "account": "deputy1",
            },
            "co_signers": [],
            "lead_unit": "周口市公安局",
            "co_units": [],
            "received_at": _ago(30),
        },
    ),
]

FINDINGS = {
    "substantiated": "经调取执法记录仪视频、询问当事民警及在场群众，反映问题属实。"
    "已责令当事民警作出书面检查，并对其批评教育，所在单位已开展作风整顿。",
    "partly": "经调查，反映的接待不及时问题部分属实，当日因警力集中处置突发警情导致出警延误。已责成该所完善警力调度，并向投诉人说明情况。",
    "unsubstantiated": "经调取笔录原件、同步录音录像并询问双方当事人，笔录内容与当事人陈述一致，未发现偏袒一方的情形，反映问题不属实。",
}
