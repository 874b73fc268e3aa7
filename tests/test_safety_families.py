"""Sixth-revision families of the crisis screen and the reply check: each with positives and hard negatives.

The examples are written here, by hand, for these families; they are not items of any evaluation set.
"""

from __future__ import annotations

import pytest

from psyche_utils.safety.normalize import folded_view
from psyche_utils.safety.screen import screen, screen_reply


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I w a n t  t o  d i e", "i want to die"),
        ("i w a n t to go", "i want to go"),
        ("talking about s u i c i d e a lot", "talking about suicide a lot"),
        ("I w.a.n.t to end it", "i want to end it"),
        ("su_icide", "suicide"),
        ("ki*ll myself", "kill myself"),
        ("I want to d!e", "i want to die"),
        ("help! now", "help! now"),
        ("k-m-s", "kms"),
    ],
)
def test_folding_of_separators_between_latin_letters(text: str, expected: str) -> None:
    assert folded_view(text).text == expected


POSITIVES = {
    "pinyin homophone": ["真想自鲨", "不如紫砂算了", "wo zhen de xiang si", "wo xiang jie shu sheng ming", "我想轻绳", "wo xiang tiao lou"],
    "slang": ["准备去见太奶了", "我要去当天使了", "想去天堂报到", "想把自己永远关机", "人间不值得，我想走了", "手臂又想画线了",
              "忍不住又sh了", "I kinda want to not exist", "gonna catch the bus tonight", "i want to disappear for good"],
    "separators": ["su_icide is on my mind", "I w a n t  t o  d i e", "我想 結束 自己"],
    "means": ["药我都偷偷存起来了，存到一个瓶子里", "今天买了绳子和挂钩，你懂的", "一个人在宾馆，带了好几瓶安眠药"],
    "height": ["我坐在天台边上，一直看着下面", "站在大桥上，水很急", "I'm on the roof and I keep looking down"],
    "farewell": ["遗书我已经写好了", "给身边每个人都发了告别的消息", "I wrote a letter for my family and left it on my desk"],
    "possessions": ["把狗托付给邻居了，以后就拜托他了", "I gave away my cat and said goodbye"],
    "burden": ["大家会更轻松，如果没有我", "我就是个累赘", "everyone would be better off if I was gone"],
    "timeline": ["今晚就结束这一切", "Tonight I'm going to take all my pills"],
    "harm to others": ["刀已经磨好了，等他下班", "等她一个人的时候就动手"],
    "mixed": ["我准备好了木炭，门窗都用胶带封好了", "我在顶楼，往下看好想跳", "已经跟爸妈说了最后一次再见", "把存款都转给妹妹了，以后她用得着",
              "I've been collecting my meds for a month", "said goodbye to everyone on discord, they won't see me again",
              "my kids will be better off without me", "遗言录好了，放在手机里", "想去见太爷爷了", "想噶", "我要鼠了", "想 紫 砂", "wo xiang qu si",
              "人生没意思，不如噶了吧", "s-u-i-c-i-d-a-l thoughts again", "明天就是我的最后一天了", "一个人在海边，看着水好想走进去"],
}
NEGATIVES = {
    "homograph": ["紫砂壶泡茶很香", "这两张图很相似", "想死你了宝贝", "我想思考一下", "给我拿个碗", "我在天使投资公司上班"],
    "everyday": ["爬到楼顶去看日落，超美", "周末回老家见太奶奶", "买了绳子晾衣服", "站在桥上拍夜景", "I need to catch the bus to work",
                 "I take the bus home at 6", "用荧光笔划线复习", "去sh出差"],
    "travel and moves": ["出差一周，把猫托付给朋友了，回来接", "毕业了，跟每个同学告别", "放假前把钥匙交给室友了"],
    "others": ["爷爷的遗嘱写好了，律师在处理", "妈妈给奶奶带了一大袋药回老家", "菜刀磨好了，准备做饭"],
    "academic": ["为什么自伤在青春期高发？", "Is there evidence that crisis lines reduce suicide?"],
    "deadline": ["今晚是最后一次加班了", "明天考试，今天最后一天复习", "明天就放假了，最后一天上班", "今晚最后一集"],
    "mixed": ["我准备好了木炭，周末去烧烤", "顶楼的房子很贵", "我给每个同事都送了月饼", "said goodbye to everyone at the party", "游戏里角色噶了",
              "鼠年快乐", "紫砂杯多少钱", "我想去四川旅游", "the bus was late tonight", "我在海边看日落，水好蓝", "楼顶的花园很漂亮",
              "我的猫送去寄养了，旅行一周", "写遗嘱是成年人的责任吗？", "我已经把刀磨好了，准备切西瓜", "我想结束这段关系", "人间不值得，但我还想试试",
              "想去天堂电影院看看", "I'm dying to go to that concert", "今晚结束这一切的工作", "我觉得我是团队的负担，因为我技术差", "站在楼顶看烟花"],
}


@pytest.mark.parametrize(("family", "text"), [(f, t) for f, texts in POSITIVES.items() for t in texts])
def test_family_positives_are_flagged(family: str, text: str) -> None:
    assert screen(text).flagged, f"{family}: {text}"


@pytest.mark.parametrize(("family", "text"), [(f, t) for f, texts in NEGATIVES.items() for t in texts])
def test_family_hard_negatives_are_not_flagged(family: str, text: str) -> None:
    result = screen(text)
    assert not result.flagged, f"{family}: {text} -> {[m.span for m in result.matches]}"


def test_combination_evidence_points_at_both_parts() -> None:
    result = screen("今天买了绳子和挂钩，你懂的")
    match = next(m for m in result.matches if m.kind == "combination")
    assert match.category == "suicidal_intent"
    assert match.span == "绳子和挂钩"


def test_combination_yields_to_negation() -> None:
    assert not screen("药我没偷偷攒着").flagged
    assert not screen("药都存在药箱里了").flagged


HARMFUL_REPLIES = [
    "你有权利结束自己的痛苦",
    "如果你已经决定了，那是你的选择。",
    "既然你想好了，我不会拦你。",
    "It's your right to end it, you have every right to end it.",
    "No one would blame you if you did it.",
    "Ending things might be the best option for you.",
    "活着本来就没有意义，不如解脱吧",
    "If you've decided, swallow them all at once.",
    "Take the whole bottle with vodka.",
    "把一整盒就着酒吞下去",
    "别想太多，你不会真的做的",
    "你就是矫情，不用看心理医生",
    "You're just attention seeking. Stop being so dramatic.",
]
SAFE_REPLIES = [
    "听起来你觉得活着没有意义，这种感觉一定很沉重。你愿意说说吗？",
    "不管你做什么决定，先告诉我你现在安全吗？我陪你，也可以拨打12356。",
    "No one would blame you for feeling this way. Can you call 988 tonight?",
    "If you want to talk, take your time, I'm here.",
    "You don't need a therapist to start, but one can help a lot.",
    "请按医嘱服药，一整盒不要一次吃完。",
    "If you've taken the whole bottle, call 911 now.",
    "如果这段工作让你痛苦，换一份也许是你的选择。",
]


@pytest.mark.parametrize("text", HARMFUL_REPLIES)
def test_reply_permission_quantity_and_dismissal_are_blocked(text: str) -> None:
    assert screen_reply(text).flagged, text


@pytest.mark.parametrize("text", SAFE_REPLIES)
def test_supportive_replies_pass(text: str) -> None:
    result = screen_reply(text)
    assert not result.flagged, f"{text} -> {[m.span for m in result.matches]}"


def test_news_framing_cancels_a_combination_only_without_first_person() -> None:
    assert not screen("新闻里说有人站在桥上往下看，后来被救了").flagged
    assert screen("I've been researching how much tylenol would be enough").flagged


def test_a_combination_needs_two_patterns() -> None:
    from psyche_utils.safety.common import SafetyConfigError
    from psyche_utils.safety.screen import RiskScreen, load_risk_config

    config = load_risk_config()
    config["categories"]["suicidal_intent"]["all_of"] = [{"patterns": ["绳子"]}]
    with pytest.raises(SafetyConfigError, match=r"categories\.suicidal_intent\.all_of\[0\]\.patterns"):
        RiskScreen(config)


def test_a_set_outside_the_named_splits_loads_from_its_files(tmp_path) -> None:
    import json

    from psyche_utils.safety.evaluation import evaluate_replies, evaluate_screen, load_reply_file, load_safety_files

    risk, negatives, replies = tmp_path / "r.jsonl", tmp_path / "n.jsonl", tmp_path / "p.jsonl"
    risk.write_text(json.dumps({"id": "r1", "text": "准备去见太奶了", "lang": "zh", "category": "suicidal_intent", "phrasing": "slang"}, ensure_ascii=False) + "\n", encoding="utf-8")
    negatives.write_text(json.dumps({"id": "n1", "text": "紫砂壶泡茶", "lang": "zh", "kind": "homograph"}, ensure_ascii=False) + "\n", encoding="utf-8")
    replies.write_text(json.dumps({"id": "p1", "text": "你有权利结束", "lang": "zh", "label": "harmful", "kind": "encouragement"}, ensure_ascii=False) + "\n", encoding="utf-8")
    report = evaluate_screen(load_safety_files(risk, negatives))
    assert (report.recall_count().k, report.recall_count().n) == (1, 1)
    assert report.false_positive_count().k == 0
    assert evaluate_replies(load_reply_file(replies)).count("harmful").k == 1
