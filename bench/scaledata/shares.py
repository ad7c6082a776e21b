"""The generator's shares: its assumptions about a five-year-old bureau (rough, documented here).

Counties are weighted by the 2020 census; the rest are the product owner's and the generator's
estimates of a bureau's real mix.
"""

from __future__ import annotations

from datetime import timedelta

# The seventh national census (2020), resident population in ten thousands: the counties' share
# of complaints.  The city's own units take a share of their own.
COUNTY_POPULATION = {
    "411602": 74.5,  # 川汇区
    "411603": 118.7,  # 淮阳区
    "411621": 61.5,  # 扶沟县
    "411622": 70.1,  # 西华县
    "411623": 92.4,  # 商水县
    "411624": 98.0,  # 沈丘县
    "411625": 101.5,  # 郸城县
    "411627": 113.1,  # 太康县
    "411628": 89.5,  # 鹿邑县
    "411681": 103.6,  # 项城市
}
CITY_UNIT_SHARE = 0.06
CATEGORY_WEIGHTS = {
    "执法不规范": 26,
    "态度粗暴": 22,
    "不作为": 18,
    "乱作为/滥用职权": 8,
    "吃拿卡要": 3,
    "违规查封扣押冻结": 2,
    "逐利执法/插手经济纠纷": 2,
    "刑讯逼供/非法取证": 1,
    "久拖不决": 12,
    "其他违法违纪": 6,
}
OUTCOMES = [
    ("substantiated", 12),
    ("mostly_substantiated", 8),
    ("partly_substantiated", 15),
    ("unsubstantiated", 48),
    ("unverifiable", 14),
    ("no_finding", 3),
]
SUBSTANTIATED = {"substantiated", "mostly_substantiated", "partly_substantiated"}
ACCOUNTABILITY = [
    ("批评教育", 50),
    ("通报批评", 20),
    ("诫勉谈话", 15),
    ("停止执行职务", 5),
    ("禁闭", 3),
    ("党纪政务处分", 6),
    ("移送司法机关", 1),
]
RATINGS = [("satisfied", 70), ("basically_satisfied", 19), ("unsatisfied", 7), (None, 4)]
CHANNELS = [
    ("phone", 62),
    ("web", 12),
    ("wechat", 8),
    ("letter", 3),
    ("visit", 4),
    ("email", 1),
    ("transfer_12345", 7),
    ("transfer_xinfang", 3),
]
CLASSIFICATIONS = [("A", 55), ("B", 30), ("C", 15)]
ANONYMOUS_SHARE = 0.12
# Repeats (the same caller about the same unit again, within intake's repeat window): about 7 %
# of complaints.  A repeat is decided first and then given an earlier caller's phone; it is not
# left to phone collisions, whose share grows with the data set (a fixed pool of 50,000 phones
# made 17 % repeats at 100,000 complaints and 29 % at a million).
REPEAT_SHARE = 0.07
REPEAT_WINDOW = timedelta(days=180)  # intake's repeat_window_days default
# Deadline extensions (延期) of a complaint's verification clock: asked for in about one round in
# twenty, before the deadline; most approved (the due date moves), some refused.
EXTENSION_SHARE = 0.05
EXTENSION_DAYS = [(10, 3), (15, 4), (20, 2), (30, 1)]  # at most verification's extension_max_days
EXTENSION_APPROVED = 0.8
# Open matters (5 % of all by default): how far past the receipt they were, in days, by the
# ladder step their main clock has reached (13 working days for a complaint).
OPEN_AGES = [((0, 12), 0.2), ((14, 17), 0.2), ((19, 26), 0.2), ((27, 40), 0.2), ((41, 360), 0.2)]
UNITS_BELOW = ["城关派出所", "城郊派出所", "交警大队", "刑警大队", "治安大队", "看守所", "经侦大队"]
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
)
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国红梅志强玉兰海燕"
