"""Crisis screening in front of the model and checks on what the model says back.

Layers, in the order a chat turn meets them (``psyche_utils.chat``):

1. ``screen``: the keyword screen on the user turn (``screen.py``), matched on normalised views of
   the text (``normalize.py``: NFKC, separators between CJK characters, traditional -> simplified,
   pinyin) with evidence pointing into the original text;
2. an optional guard model (``guard.py``: Qwen3Guard-Gen or any chat model) on what the keywords passed;
3. ``screen_reply``: the reply check on the model's answer and reasoning (``reply_check.py``);
4. the referral-first reply (``referral.py``) for anything flagged, and whenever a layer fails with
   ``fail_closed``.

``evaluation.py`` measures every layer on the project's sets with n and Wilson intervals.
"""

from psyche_utils.safety.common import UNCLASSIFIED, Match, SafetyConfigError, ScreenResult, detect_language
from psyche_utils.safety.evaluation import (
    NEGATIVE_KINDS,
    PHRASINGS,
    REPLY_SPLITS,
    SAFETY_SET_DIR,
    SAFETY_SPLITS,
    Rate,
    ReplyExample,
    ReplyReport,
    SafetyExample,
    SafetyReport,
    evaluate_replies,
    evaluate_screen,
    load_reply_set,
    load_safety_set,
)
from psyche_utils.safety.guard import (
    CLASSIFIER_LABELS,
    CLASSIFIER_PROMPT,
    GUARD_CONFIG_PATH,
    QWEN3GUARD_CATEGORIES,
    GuardOutput,
    GuardParseError,
    LLMRiskClassifier,
    Qwen3GuardClassifier,
    RiskClassifier,
    layer_error,
    load_guard_config,
    load_qwen3guard,
    parse_classifier_label,
    parse_qwen3guard,
    qwen3guard_prompt,
    qwen3guard_response_prompt,
    screen_many,
)
from psyche_utils.safety.normalize import TextView, basic_view, folded_view, normalize, pinyin_view, to_simplified, views
from psyche_utils.safety.referral import HOTLINES_PATH, REFERRAL_PATH, Hotline, Referral, default_referral, load_hotlines, referral_reply
from psyche_utils.safety.reply_check import ReplyCheck
from psyche_utils.safety.screen import (
    HELP_FOR_OTHER,
    RISK_EXPRESSIONS_PATH,
    SAFETY_CONFIG_DIR,
    RiskScreen,
    default_screen,
    load_risk_config,
    screen,
    screen_reply,
)

__all__ = [
    "CLASSIFIER_LABELS", "CLASSIFIER_PROMPT", "GUARD_CONFIG_PATH", "HELP_FOR_OTHER", "HOTLINES_PATH", "NEGATIVE_KINDS", "PHRASINGS",
    "QWEN3GUARD_CATEGORIES", "REFERRAL_PATH", "REPLY_SPLITS", "RISK_EXPRESSIONS_PATH", "SAFETY_CONFIG_DIR",
    "SAFETY_SET_DIR", "SAFETY_SPLITS", "UNCLASSIFIED", "GuardOutput", "GuardParseError", "Hotline", "LLMRiskClassifier",
    "Match", "Qwen3GuardClassifier", "Rate", "Referral", "ReplyCheck", "ReplyExample", "ReplyReport", "RiskClassifier",
    "RiskScreen", "SafetyConfigError", "SafetyExample", "SafetyReport", "ScreenResult", "TextView", "basic_view",
    "default_referral", "default_screen", "detect_language", "evaluate_replies", "evaluate_screen", "folded_view",
    "layer_error", "load_guard_config", "load_hotlines", "load_qwen3guard", "load_reply_set", "load_risk_config",
    "load_safety_set", "normalize", "parse_classifier_label", "parse_qwen3guard", "pinyin_view", "qwen3guard_prompt",
    "qwen3guard_response_prompt", "referral_reply", "screen", "screen_many", "screen_reply", "to_simplified", "views",
]
