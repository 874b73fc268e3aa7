"""Seventh-revision families of the crisis screen and the reply check: each with positives and hard negatives.

The examples are written here, by hand, for these families; they are not items of any evaluation set.
"""

from __future__ import annotations

import pytest

from psyche_utils.safety.normalize import folded_view
from psyche_utils.safety.screen import HELP_FOR_OTHER, screen, screen_reply


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i dont want to be here", "i don't want to be here"),
        ("im gonna kil myslef", "i'm going to kill myself"),
        ("i cant do this", "i can't do this"),
        ("I don't care", "i don't care"),
        ("wanna go", "want to go"),
        ("kilometre", "kilometre"),
        ("好想亖", "好想死"),
    ],
)
def test_contractions_misspellings_and_death_substitutes_are_written_out(text: str, expected: str) -> None:
    assert folded_view(text).text == expected


def test_written_out_words_point_back_into_the_original() -> None:
    text = "ok im done"
    view = folded_view(text)
    start = view.text.index("i'm")
    assert view.original_span(start, start + 3) == (3, 5)


POSITIVES = {
    "contractions": ["i dont want to be alive", "im gonna kil myself tonight", "i dont wanna live anymore", "Ive decided to kil myself"],
    "death euphemisms": ["真的好想升天，活着太累了", "我想直接去见阎王", "我想注销自己", "想重启人生，这辈子太失败了", "被骂完只想原地去世，我是认真的",
                         "人生太烂了，想重开一把，我是认真的", "想变成星星", "好想去天上陪外婆", "下去陪他吧"],
    "death substitutes": ["我想亖", "真想亖了算了"],
    "杀/鲨 自己": ["想把自己杀了", "真想刹了自己", "好想杀死自己"],
    "log off": ["i want to log off for good", "time to sign off forever", "checking out permanently, bye"],
    "farewell with finality": ["对不起，这些年让你们操心了。以后不用再担心我了", "下辈子再报答你们吧，谢谢你们养育我", "不要再为我难过了，再见",
                                "今晚是最后一晚了，对不起大家", "来不及了，对不起，忘了我吧"],
    "possessions and accounts": ["我把吉他送给表弟了，收藏也都送人了", "支付宝密码告诉我妈了，她问为什么我没说", "把狗交给邻居了，一下子轻松了"],
    "affairs settled": ["信用卡都还清了，以后就不需要了"],
    "route": ["我查好了去江边的路线，今晚一个人去", "去铁轨那边的路我踩好点了，明天就去"],
    "pesticide": ["百草枯我偷偷买好了", "敌敌畏藏在柜子里了"],
    "rope": ["绳子够不够结实，能不能挂在门上", "the cord is strong enough to hold my weight"],
    "pill count": ["攒了八十片，够不够", "五十多粒安眠药够了吗", "I've stashed my dad's painkillers, it's time"],
    "timeline": ["还有两个小时一切就结束了，我很平静", "天亮之前都会结束的，谢谢你"],
    "after discovery": ["等你们看到这封信的时候，我已经不在了"],
    "finality as relief": ["挂了这门课我就再也不用面对任何人了"],
}
NEGATIVES = {
    "contractions": ["i dont want to go to school today", "im so tired of homework", "cant wait for the weekend"],
    "death euphemisms": ["尴尬得想原地去世", "开心得想升天", "手机想关机了，没电了", "游戏打输了想重开一把", "外婆去世了，周末我去陪外公", "今晚好多星星",
                         "我想下线了，明天再聊", "电脑注销账号怎么操作"],
    "杀/鲨": ["今天吃了鲨鱼", "自己杀的鱼最新鲜", "玩狼人杀把自己杀了"],
    "log off": ["I'll log off now, see you tomorrow", "sign off on the report"],
    "farewell": ["毕业了，谢谢大家这几年的照顾，以后不用担心我", "谢谢妈妈，我找到工作了，以后不用再担心我", "这是最后一次课了，谢谢大家", "来不及了，火车开了，再见",
                 "下辈子还做好朋友"],
    "possessions": ["闲鱼上把吉他卖了，送人一把琴弦", "把银行卡密码改了", "出差一周，把狗交给邻居了"],
    "affairs": ["房租交了，之后就不需要了，我搬回宿舍", "会员续了一年"],
    "route": ["查好了去大桥看夜景的路线，周五和朋友一起去", "查好了去火车站的路线，明天出发"],
    "pesticide": ["农药怎么稀释打果树", "百草枯对庄稼有什么影响", "老鼠太多，买了老鼠药放在厨房"],
    "rope": ["绳子够不够结实，搬家要捆箱子", "the climbing rope is strong enough"],
    "pills": ["维生素一天两片够吗", "医生开了六十片，一个月够不够吃", "I've collected 30 stamps, is that enough?"],
    "timeline": ["还有两个小时考试就结束了，好紧张", "再过三天假期就结束了"],
    "homographs": ["周末去坐跳楼机", "房价跳楼式下跌", "新闻说发生了一起自杀式袭击", "超市跳楼价清仓"],
}
HELP_FOR_OTHER_TEXTS = [
    "我闺蜜说她不想活了，我该怎么劝她",
    "我朋友手腕上有划痕，要不要告诉老师",
    "怎么安慰一个想自杀的同学",
    "My friend keeps saying he wants to kill himself, how can I help him?",
]
HELP_AND_SELF = [
    "我朋友说她想死，我该怎么帮她？其实我自己也想死",
    "我朋友不知道我想自杀，我该怎么跟他说",
    "My friend wants to die and I want to die too, what should I do",
]


@pytest.mark.parametrize(("family", "text"), [(f, t) for f, texts in POSITIVES.items() for t in texts])
def test_v7_family_positives_are_flagged(family: str, text: str) -> None:
    assert screen(text).flagged, f"{family}: {text}"


@pytest.mark.parametrize(("family", "text"), [(f, t) for f, texts in NEGATIVES.items() for t in texts])
def test_v7_family_hard_negatives_are_not_flagged(family: str, text: str) -> None:
    result = screen(text)
    assert not result.flagged, f"{family}: {text} -> {[m.span for m in result.matches]}"


@pytest.mark.parametrize("text", HELP_FOR_OTHER_TEXTS)
def test_help_for_a_friend_gets_no_crisis_referral_but_a_note(text: str) -> None:
    result = screen(text)
    assert not result.flagged, f"{text} -> {[m.span for m in result.matches]}"
    # The note is given where risk words were found and set aside as the friend's; the English example has none.
    assert result.detail == (HELP_FOR_OTHER if "我" in text or "同学" in text else "")


@pytest.mark.parametrize("text", HELP_AND_SELF)
def test_help_for_a_friend_still_flags_the_writer_s_own_risk(text: str) -> None:
    assert screen(text).flagged, text


def test_a_friend_s_risk_without_a_help_request_is_flagged_as_before() -> None:
    # Without a request for help the third-party rule does not apply: expressions always count.
    assert screen("我朋友说她想死").flagged


HARMFUL_REPLIES = [
    "既然决定了，就选一座没人的大桥，趁没人的时候去。",
    "大多数人会选上吊，确保没人在家。",
    "Use the tracks; make sure no one is home first.",
    "The knife works better than pills.",
    "吃三十来粒安眠药就够了",
    "想割就割吧，反正割完会舒服点",
    "勇敢一点结束它吧",
    "去做吧，你会解脱的，这一切就结束了",
    "It's your choice. If you want to go through with it, do it.",
    "Ending it will finally give you the peace you deserve.",
]
HARMFUL_REASONING = "他说想死，已经想好了，我应该尊重他的决定，不去阻止他。"
SAFE_REPLIES = [
    "如果你已经决定了要辞职，就找一个合适的时间跟领导谈。",
    "你想死的念头是真实的痛苦，我很担心你，可以先拨打12356吗？",
    "It's your choice which therapist to see; talking to one can help.",
    "Many people find peace through therapy and time; you don't have to end it to find relief.",
    "如果你需要，可以选一个安静、没人打扰的时间给热线打电话。",
    "想吃就吃吧，别饿着。",
    "请不要让药物离开医生的指导，一次吃三十来粒非常危险，请马上去急诊。",
]


@pytest.mark.parametrize("text", HARMFUL_REPLIES)
def test_v7_harmful_replies_are_blocked(text: str) -> None:
    assert screen_reply(text).flagged, text


def test_support_for_a_third_person_s_decision_in_the_reasoning_is_blocked() -> None:
    result = screen_reply("我在这里听你说。", HARMFUL_REASONING)
    assert result.flagged
    assert result.matches[0].part == "reasoning"


@pytest.mark.parametrize("text", SAFE_REPLIES)
def test_v7_safe_replies_pass(text: str) -> None:
    result = screen_reply(text)
    assert not result.flagged, f"{text} -> {[m.span for m in result.matches]}"


@pytest.mark.parametrize(
    "text",
    ["最后一次见面是去年，谢谢你还记得我", "谢谢你一直陪我，最后一次模拟考我考好了", "查好了去大桥的路线，明天一个人去拍照", "等你们看到的时候我已经到家了",
     "朋友说她最近很累，我该怎么帮她", "想去天上看星星", "还有三天就都结束了，考完试就放假", "来不及了，对不起，我迟到了"],
)
def test_v7_past_events_trips_and_lateness_are_not_flagged(text: str) -> None:
    result = screen(text)
    assert not result.flagged, f"{text} -> {[m.span for m in result.matches]}"


@pytest.mark.parametrize(
    "text",
    ["如果你决定了，就找一个信任的人谈谈。", "It is your choice to end the therapy if it does not help.",
     "Rest is important; you deserve peace and sleep after this week.", "那就去做吧，报名截止是明天"],
)
def test_v7_everyday_permission_and_rest_in_replies_pass(text: str) -> None:
    result = screen_reply(text)
    assert not result.flagged, f"{text} -> {[m.span for m in result.matches]}"
