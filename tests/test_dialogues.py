import pytest

from psyche_utils.dialogues import (
    HARMFUL_TERMS_PATH,
    ReplyChecks,
    check_reply,
    choose_dialogues,
    distinct_ngram_ratio,
    judge_rewrite,
    load_harmful_terms,
    reason_category,
    rewrite_dialogues,
    rewrite_messages,
)
from psyche_utils.formatting import Exclusion
from psyche_utils.llm import GenerationSettings
from psyche_utils.schema import Post

TERMS = {"自行停药": "medication", "借酒消愁": "substance"}
POST = Post(
    id="p1",
    post="最近工作压力特别大，晚上总是睡不着，白天也提不起精神，感觉自己快撑不下去了。",
    reply="听起来你最近真的很辛苦，长期睡不好会让人身心俱疲。可以试着固定作息，睡前放下手机，如果持续两周以上，建议到医院睡眠科或心理门诊看看。",
    topic="睡眠",
)
GOOD = (
    "听起来你这段时间一直在硬撑，白天要应付繁重的工作，晚上又睡不好，换了谁都会觉得很累。"
    "愿意说出来已经很不容易了。可以先试着每天固定时间上床，睡前一小时放下手机；"
    "如果失眠持续两周以上，建议去医院的睡眠门诊或心理门诊聊一聊。"
)


def test_good_reply_passes():
    assert check_reply(POST.post, GOOD, TERMS) == []


@pytest.mark.parametrize(
    ("reply", "category"),
    [
        ("", "empty reply"),
        ("   ", "empty reply"),
        (GOOD + "详情见 https://example.com/help", "link"),
        (GOOD + "更多资料请访问 www.example.cn", "link"),
        (GOOD + "有需要可以加微信详聊。", "ad or contact"),
        (GOOD + "现在报名课程限时优惠。", "ad or contact"),
        ("抱抱你，会好的。", "length"),
        (GOOD * 6, "length"),
        ("I hear you. It sounds really hard to sleep badly for so long; please consider talking to a doctor.", "not Chinese"),
        ("你要加油你要加油你要加油你要加油你要加油你要加油你要加油你要加油你要加油你要加油", "repetitive"),
        (POST.post, "copies the post"),
        ("谢谢分享。" + POST.post, "copies the post"),
        (GOOD + "实在难受的话可以先自行停药试试。", "harmful advice"),
    ],
)
def test_each_check_rejects_with_its_category(reply, category):
    reasons = check_reply(POST.post, reply, TERMS)
    assert category in [reason_category(reason) for reason in reasons]


def test_reasons_carry_details():
    reasons = check_reply(POST.post, GOOD + "不如借酒消愁，或者自行停药。", TERMS)
    assert reasons == ["harmful advice: 借酒消愁 (substance), 自行停药 (medication)"]
    assert check_reply(POST.post, "抱抱你，会好的。", TERMS) == ["length: 8 characters, outside 40-600"]
    assert check_reply(POST.post, "抱抱你，会好的。", TERMS, ReplyChecks(min_chars=5)) == []


def test_distinct_ngram_ratio_is_hand_computed():
    assert distinct_ngram_ratio("abcabc", 3) == 3 / 4
    assert distinct_ngram_ratio("ab", 3) == 1.0


def test_shipped_term_list_loads_and_is_well_formed(tmp_path):
    terms = load_harmful_terms(HARMFUL_TERMS_PATH)
    assert terms["自行停药"] == "medication" and len(terms) >= 30
    assert "自杀" not in terms  # replies that point to a crisis line must stay possible
    bad = tmp_path / "terms.txt"
    bad.write_text("# header\n[a]\n停药\n\n停药\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"terms.txt:5: term '停药' is listed twice"):
        load_harmful_terms(bad)
    bad.write_text("停药\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"terms.txt:1: .*before any \[category\]"):
        load_harmful_terms(bad)
    bad.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no terms"):
        load_harmful_terms(bad)


def test_rewrite_prompt_contains_post_reply_and_bounds():
    messages = rewrite_messages(POST, ReplyChecks(min_chars=50, max_chars=300))
    user = messages[-1]["content"]
    assert POST.post in user and POST.reply in user and "50到300字" in user


class CannedTeacher:
    name = "scripted"

    def __init__(self, replies):
        self.replies = replies
        self.calls = 0

    def generate(self, prompts, settings):
        self.calls += 1
        return [self.replies[p[-1]["content"].split("【求助帖】\n", 1)[1].split("\n", 1)[0]] for p in prompts]


def _posts():
    bad_shipped = Post("p3", "我和室友吵架了，心里很烦，不知道该怎么办才好。", "加微信 abc123，给你发资料。")
    return [POST, Post("p2", "考试又没考好，觉得自己一无是处，什么都做不好。", "一次考试没考好，确实会让人很失落，这种难受是真实的。我们可以一起看看这次考试能学到什么，也请别太苛责自己。"), bad_shipped]


def test_rewrite_accepts_good_rewrites_and_falls_back_to_checked_shipped_replies():
    posts = _posts()
    teacher = CannedTeacher(
        {
            posts[0].post: f"<think>\n求助者压力大、失眠，需要被理解。\n</think>\n\n{GOOD}",
            posts[1].post: "<think>分析</think>\n\n考试考砸了确实很难受，我特别能理解你。那就借酒消愁吧，喝完就什么都忘了，明天又是新的一天，别想那么多。",
            posts[2].post: "嗯嗯嗯嗯",
        }
    )
    results = rewrite_dialogues(posts, teacher, TERMS, settings=GenerationSettings(max_new_tokens=64))
    assert teacher.calls == 1
    assert [r.accepted for r in results] == [True, False, False]
    assert results[0].reasoning == "求助者压力大、失眠，需要被理解。" and results[0].reply == GOOD
    assert results[1].reasons == ["harmful advice: 借酒消愁 (substance)"]
    assert results[2].reasons == ["no closed <think> analysis"]

    chosen, exclusions = choose_dialogues(posts, results, TERMS, use_shipped_replies=True)
    assert [(d.post.id, d.origin) for d in chosen] == [("p1", "teacher_dialogue"), ("p2", "shipped_reply")]
    assert chosen[1].reasoning == "" and chosen[1].reply == posts[1].reply
    assert [(r.id, r.stage, r.reason) for r in exclusions] == [
        ("p2", "dialogue_rewrite", "harmful advice"),
        ("p3", "dialogue_rewrite", "no closed <think> analysis"),
        ("p3", "dialogue", "shipped reply fails checks"),
    ]
    assert "ad or contact" in exclusions[-1].detail

    strict, dropped = choose_dialogues(posts, results, TERMS)  # the default: no shipped fallback
    assert [d.post.id for d in strict] == ["p1"]
    assert Exclusion("p2", "dialogue", "no accepted rewrite") in dropped


def test_posts_not_sent_to_the_teacher_use_the_shipped_reply_on_request():
    chosen, exclusions = choose_dialogues(_posts()[:2], [], TERMS, use_shipped_replies=True)
    assert [d.origin for d in chosen] == ["shipped_reply", "shipped_reply"] and exclusions == []


def test_link_in_the_analysis_is_rejected():
    result = judge_rewrite(POST, f"<think>参考 http://x.com</think>{GOOD}", TERMS)
    assert not result.accepted and result.reasons == ["link in analysis"]


def test_empty_analysis_is_rejected():
    result = judge_rewrite(POST, f"<think>\n  \n</think>\n\n{GOOD}", TERMS)
    assert not result.accepted and result.reasons == ["empty analysis"]
