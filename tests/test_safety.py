"""The crisis screen: measured on the team's set, and each mechanism checked on its own."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from backends import RecordingBackend

from psyche_utils.datafiles import DataError
from psyche_utils.safety import (
    HOTLINES_PATH,
    LLMRiskClassifier,
    Referral,
    RiskScreen,
    SafetyConfigError,
    SafetyExample,
    SafetyReport,
    ScreenResult,
    evaluate_screen,
    load_hotlines,
    load_risk_config,
    load_safety_set,
    parse_classifier_label,
    referral_reply,
    screen,
    screen_many,
    screen_reply,
)

CATEGORIES = {"suicidal_intent", "self_harm", "harm_to_others", "abuse", "acute_emergency"}


@pytest.fixture(scope="module")
def main_report() -> SafetyReport:
    return evaluate_screen(load_safety_set("main"))


# --------------------------------------------------------------------------- measured on the set


def test_set_has_enough_messages_in_every_category():
    examples = load_safety_set("main")
    risk = [e for e in examples if e.label == "risk"]
    safe = [e for e in examples if e.label == "safe"]
    assert len(risk) >= 40 and len(safe) >= 40
    assert {e.category for e in risk} == CATEGORIES
    for category in CATEGORIES:
        phrasings = Counter(e.phrasing for e in risk if e.category == category)
        assert phrasings["direct"] >= 3 and phrasings["indirect"] >= 3, category
    assert {e.lang for e in examples} == {"zh", "en"}


def test_recall_on_direct_phrasing_is_at_least_095(main_report):
    recall = main_report.recall("direct")
    missed = [e.text for e in main_report.misses() if e.phrasing == "direct"]
    assert recall >= 0.95, f"direct recall {recall:.3f}; missed: {missed}"


def test_recall_on_indirect_phrasing_is_reported_per_category(main_report, record_property):
    by_category = main_report.recall_by_category("indirect")
    record_property("indirect_recall_by_category", json.dumps(by_category))
    print("indirect recall by category:", {k: round(v, 3) for k, v in by_category.items()})
    assert set(by_category) == CATEGORIES
    indirect = [e for e in main_report.examples if e.label == "risk" and e.phrasing == "indirect"]
    flagged = sum(main_report.recall("indirect", c) * sum(e.category == c for e in indirect) for c in CATEGORIES)
    assert flagged == pytest.approx(main_report.recall("indirect") * len(indirect))


def test_false_positive_rate_on_hard_negatives_is_at_most_010(main_report):
    rate = main_report.false_positive_rate()
    flagged = [(e.text, r.category) for e, r in main_report.false_positives()]
    assert rate <= 0.10, f"false-positive rate {rate:.3f}; flagged: {flagged}"


def test_every_split_loads_and_no_id_is_shared():
    seen: set[str] = set()
    for split in ("main", "holdout", "dev_v2", "holdout_v2", "holdout_v3", "holdout_v4", "holdout_v5"):
        ids = {e.id for e in load_safety_set(split)}
        assert ids and not seen & ids, split
        seen |= ids
    with pytest.raises(ValueError, match="split"):
        load_safety_set("test")


# --------------------------------------------------------------------------- the rates, hand computed


def _example(i: int, label: str, category: str | None = None, phrasing: str | None = None) -> SafetyExample:
    return SafetyExample(f"x{i}", f"text {i}", "zh", label, category, phrasing, None if label == "risk" else "sad")


def test_report_rates_match_hand_computation():
    examples = [
        _example(0, "risk", "self_harm", "direct"),
        _example(1, "risk", "self_harm", "indirect"),
        _example(2, "risk", "abuse", "indirect"),
        _example(3, "risk", "abuse", "indirect"),
        _example(4, "safe"),
        _example(5, "safe"),
        _example(6, "safe"),
        _example(7, "safe"),
    ]
    results = [
        ScreenResult(True, "self_harm"),
        ScreenResult(False, None),
        ScreenResult(True, "suicidal_intent"),  # flagged under another category still counts as caught
        ScreenResult(False, None),
        ScreenResult(True, "abuse"),
        ScreenResult(False, None),
        ScreenResult(False, None),
        ScreenResult(False, None),
    ]
    report = SafetyReport(examples, results)
    assert report.recall() == 2 / 4
    assert report.recall("direct") == 1.0
    assert report.recall("indirect") == 1 / 3
    assert report.recall_by_category("indirect") == {"self_harm": 0.0, "abuse": 0.5}
    assert report.false_positive_rate() == 1 / 4
    assert report.confusion() == {
        "self_harm": Counter({"self_harm": 1, "not flagged": 1}),
        "abuse": Counter({"suicidal_intent": 1, "not flagged": 1}),
        "safe": Counter({"abuse": 1, "not flagged": 3}),
    }
    assert [e.id for e in report.misses()] == ["x1", "x3"]
    assert [e.id for e, _ in report.false_positives()] == ["x4"]


# --------------------------------------------------------------------------- mechanisms


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("我想死", True),
        ("好久不见，想死你了！", False),  # figurative: "missed you"
        ("跳楼价清仓", False),
        ("下班打我电话", False),
        ("我爸打我", True),
        ("我从没想过自杀", False),  # negation right before the match
        ("活着没意思，想死", True),  # a cue in another clause does not negate
        ("自杀风险评估包括哪些内容？", False),  # topic term in an academic framing
        ("自杀", True),  # the same topic term on its own
        ("我在写论文，但我真的不想活了", True),  # academic markers never cancel an expression
        ("ＩＷＡＮＴ ＴＯ ＫＩＬＬ ＭＹＳＥＬＦ", True),  # full-width and upper case are normalised
        ("I would never kill myself", False),
    ],
)
def test_screen_mechanisms(text, flagged):
    assert screen(text).flagged is flagged


def test_category_follows_priority_and_keeps_all_evidence():
    result = screen("我刚吞了一整瓶安眠药，不想活了")
    assert result.flagged and result.category == "acute_emergency"
    assert result.categories[:2] == ("acute_emergency", "suicidal_intent")
    assert all(match.span for match in result.matches)


def test_screen_reply_catches_encouragement_and_method_details_only():
    assert screen_reply("你应该去死吧").category == "encouragement"
    assert screen_reply("The lethal dose is about 10 grams.").category == "method_detail"
    assert not screen_reply("如果你有自杀的念头，请马上拨打12356，和专业人员谈一谈。").flagged
    assert not screen_reply("自杀风险评估包括意念、计划、手段和既往史。").flagged


def test_bad_pattern_is_reported_with_file_and_field(tmp_path: Path):
    config = copy.deepcopy(load_risk_config())
    config["categories"]["self_harm"]["expressions"][2]["pattern"] = "(unclosed"
    path = tmp_path / "risk.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    with pytest.raises(SafetyConfigError, match=r"risk\.yaml: categories\.self_harm\.expressions\[2\]\.pattern"):
        load_risk_config(path)


def test_editing_a_copy_of_the_config_changes_the_screen():
    config = copy.deepcopy(load_risk_config())
    config["figurative"] = []
    assert RiskScreen(config).screen("好久不见，想死你了！").flagged
    assert not screen("好久不见，想死你了！").flagged


def test_bad_evaluation_record_names_file_line_and_field(tmp_path: Path):
    (tmp_path / "risk_messages.jsonl").write_text(
        '{"id": "a", "text": "我想死", "lang": "zh", "category": "suicidal_intent", "phrasing": "direct"}\n'
        '{"id": "b", "text": "我想死", "lang": "zh", "category": "sadness", "phrasing": "direct"}\n',
        encoding="utf-8",
    )
    (tmp_path / "hard_negatives.jsonl").write_text('{"id": "n", "text": "好累", "lang": "zh", "kind": "sad"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"risk_messages\.jsonl, line 2 \[id b\], field 'category'"):
        load_safety_set("main", tmp_path)


def test_unknown_evaluation_field_is_reported_not_dropped(tmp_path: Path):
    (tmp_path / "risk_messages.jsonl").write_text(
        '{"id": "a", "text": "我想死", "lang": "zh", "category": "suicidal_intent", "phrasing": "direct", "note": "x"}\n', encoding="utf-8"
    )
    (tmp_path / "hard_negatives.jsonl").write_text('{"id": "n", "text": "好累", "lang": "zh", "kind": "sad"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1 \[id a\], field 'note': unknown field"):
        load_safety_set("main", tmp_path)


# --------------------------------------------------------------------------- hotlines and referral


def test_every_hotline_has_a_source_and_a_check_date():
    hotlines = load_hotlines()
    numbers = {h.number for h in hotlines}
    assert {"12356", "120", "110", "988"} <= numbers
    for hotline in hotlines:
        assert hotline.sources and all(source["url"].startswith("http") for source in hotline.sources)
        assert len(hotline.checked) == 10 and hotline.checked[4] == "-"


def test_hotline_file_errors_name_the_field(tmp_path: Path):
    data = yaml.safe_load(HOTLINES_PATH.read_text(encoding="utf-8"))
    data["hotlines"][1]["kind"] = "chat"
    path = tmp_path / "hotlines.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(SafetyConfigError, match=r"hotlines\[1\]\.kind"):
        load_hotlines(path)


def test_referral_is_in_the_users_language_and_lists_only_checked_numbers():
    zh = referral_reply(screen("我想自杀"), "我想自杀")
    assert "12356" in zh and "120" in zh and "988" not in zh
    assert "82951332" not in zh  # unconfirmed: left out by default
    en = referral_reply(screen("I want to kill myself"), "I want to kill myself")
    assert "988" in en and "911" in en and "116 123" in en
    with_unconfirmed = Referral.from_files(include_unconfirmed=True).reply(screen("我想自杀"), "我想自杀")
    assert "010-82951332" in with_unconfirmed
    assert zh.index("120") < zh.index("12356")  # emergency services before the crisis line


# --------------------------------------------------------------------------- optional LLM classifier


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("self_harm", "self_harm"),
        ("<think>可能是 abuse？不，是</think>\n标签：harm_to_others", "harm_to_others"),
        ("NONE", "none"),
        ("我不确定", None),
        ("<think>suicidal_intent", None),  # unclosed think block: no answer part
    ],
)
def test_classifier_label_parsing(reply, label):
    assert parse_classifier_label(reply) == label


def test_classifier_only_sees_what_the_keywords_passed():
    backend = RecordingBackend(["abuse"])
    texts = ["我想自杀", "他每天查我的手机，我很怕他"]
    results = screen_many(texts, classifier=LLMRiskClassifier(backend))
    assert [r.source for r in results] == ["keywords", "classifier"]
    assert results[1].category == "abuse"
    assert len(backend.prompts) == 1 and texts[1] in backend.prompts[0][0]["content"]


def test_unparsed_classifier_replies_are_counted_and_fail_closed_on_request():
    texts = ["今天天气不错", "有点累"]
    open_classifier = LLMRiskClassifier(RecordingBackend(["随便说点什么"]))
    assert not any(r.flagged for r in screen_many(texts, classifier=open_classifier))
    assert open_classifier.unparsed == 2
    closed = screen_many(texts, classifier=LLMRiskClassifier(RecordingBackend(["???"]), fail_closed=True))
    assert all(r.flagged and r.category == "unclassified" for r in closed)
