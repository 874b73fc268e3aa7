"""How fast is MinHash-LSH deduplication, and what does it give up against exact all-pairs Jaccard?

Builds a deterministic synthetic bank of N questions (default 50,000) from clauses of the shipped
Chinese data, with 10% planted near-duplicates (one to three characters changed), then:

1. times ``deduplicate`` on the whole bank and reports questions per second;
2. on a subsample, times the exact all-pairs comparison it replaces, and extrapolates that to N
   (pairs grow as N^2, so the ratio grows with N);
3. measures recall: of the planted copies whose exact Jaccard with their source reaches the
   threshold (the ones all-pairs would catch), the share that LSH removed.

Run: python benchmarks/dedup_throughput.py [--n 50000] [--sample 1500]
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import time

from psyche_utils.dedup import char_ngrams, deduplicate, jaccard, question_text
from psyche_utils.paths import DATA_DIR
from psyche_utils.schema import Question, load_posts, load_questions


def clause_pool() -> tuple[list[str], list[str]]:
    """Clauses and option texts cut from the shipped passages, questions and posts."""
    questions, _ = load_questions(DATA_DIR / "seed_questions.jsonl", strict=False)
    posts, _ = load_posts(DATA_DIR / "posts.jsonl", strict=False)
    passages = (DATA_DIR / "passages.jsonl").read_text(encoding="utf-8")
    texts = [passages] + [q.question + q.explanation for q in questions] + [p.post + p.reply for p in posts]
    clauses = sorted({c for text in texts for c in re.split(r"[，。；：？！“”\"\n]", text) if 6 <= len(c) <= 30})
    options = sorted({text for q in questions for text in q.options.values()})
    return clauses, options


def perturb(text: str, rng: random.Random, edits: int) -> str:
    chars = list(text)
    for _ in range(edits):
        position = rng.randrange(len(chars))
        operation = rng.choice(("drop", "swap", "insert"))
        if operation == "drop" and len(chars) > 10:
            del chars[position]
        elif operation == "swap":
            chars[position] = rng.choice("的了是在有和")
        else:
            chars.insert(position, rng.choice("的了是在有和"))
    return "".join(chars)


def synthetic_bank(n: int, seed: int = 0) -> tuple[list[Question], dict[str, Question]]:
    """N questions, and each planted near-duplicate's id mapped to the question it copies."""
    rng = random.Random(seed)
    clauses, option_texts = clause_pool()
    questions: list[Question] = []
    planted: dict[str, Question] = {}
    for index in range(n):
        qid = f"syn-{index:06d}"
        if index > 100 and rng.random() < 0.10:
            source = questions[rng.randrange(len(questions))]
            stem = perturb(source.question, rng, rng.randint(1, 3))
            questions.append(Question(qid, stem, source.options, source.answer, "single", source.subject, ""))
            planted[qid] = source
            continue
        stem = "，".join(rng.sample(clauses, 3)) + "，这属于（ ）。"
        options = dict(zip("ABCD", rng.sample(option_texts, 4)))
        questions.append(Question(qid, stem, options, rng.choice("ABCD"), "single", "合成", ""))
    return questions, planted


def all_pairs(questions: list[Question], threshold: float, ngram: int) -> tuple[float, int]:
    """Seconds for the exact O(N^2) comparison, and how many pairs reach the threshold."""
    grams = [char_ngrams(question_text(q), ngram) for q in questions]
    started = time.perf_counter()
    hits = sum(jaccard(a, b) >= threshold for a, b in itertools.combinations(grams, 2))
    return time.perf_counter() - started, hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--sample", type=int, default=1_500)
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--ngram", type=int, default=5)
    args = parser.parse_args()

    questions, planted = synthetic_bank(args.n)
    started = time.perf_counter()
    result = deduplicate(questions, threshold=args.threshold, ngram=args.ngram)
    lsh_seconds = time.perf_counter() - started
    removed = {r.id for r in result.removed}
    by_id = {q.id: q for q in questions}
    reachable = {
        qid for qid, source in planted.items()
        if jaccard(char_ngrams(question_text(by_id[qid]), args.ngram), char_ngrams(question_text(source), args.ngram)) >= args.threshold
    }
    recall = len(removed & reachable) / len(reachable)
    extra = len(removed - set(planted))

    sample = questions[: args.sample]
    pair_seconds, pair_hits = all_pairs(sample, args.threshold, args.ngram)
    per_pair = pair_seconds / (len(sample) * (len(sample) - 1) / 2)
    extrapolated = per_pair * args.n * (args.n - 1) / 2

    print(f"questions: {args.n:,} ({len(planted):,} planted near-duplicates); threshold {args.threshold}, {args.ngram}-grams")
    print(f"MinHash-LSH dedup: {lsh_seconds:.1f} s = {args.n / lsh_seconds:,.0f} questions/s; summary {result.summary()}")
    print(
        f"planted copies at Jaccard >= threshold: {len(reachable):,} of {len(planted):,}; "
        f"removed by LSH (recall): {recall:.3f}; removals that were not planted copies: {extra}"
    )
    print(f"exact all-pairs on {len(sample):,}: {pair_seconds:.1f} s ({pair_hits} pairs >= threshold)")
    print(f"exact all-pairs extrapolated to {args.n:,}: {extrapolated / 3600:.1f} h")
    print(f"speed-up of LSH over all-pairs at {args.n:,}: {extrapolated / lsh_seconds:,.0f}x")


if __name__ == "__main__":
    main()
