"""Deterministic fake text generation.

A "token" here is one whitespace-delimited piece including its leading
whitespace, so ``"".join(tokens)`` reproduces the text exactly.
"""

import hashlib
import random
import re

WORDS = (
    "the system uses a simple model to answer each question with clear and "
    "useful information about data time people work world water light power "
    "energy process design value result field method theory group level "
    "example history language number change order point public reason "
    "science service state study market network signal memory storage "
    "cluster node server request response stable careful small large quick "
    "steady bright quiet strong gentle modern early later often usually "
    "always rarely because while after before during between across within "
    "helps shows makes keeps builds moves reads writes finds gives takes "
    "brings measures compares explains describes supports improves reduces"
).split()

CJK_PIECES = ["的", "是", "在", "了", "我们", "这个", "模型", "数据", "可以",
              "进行", "の", "では", "问题", "中国", "一个", "服务", "系统"]

REPEAT_PHRASE = " and the answer is the answer"

TOOL_XML = (
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>"
    "get_current_time\n```json\n{\"timezone\": \"UTC\"}\n```"
    "<｜tool▁call▁end｜><｜tool▁calls▁end｜> <tool_call>"
    "{\"name\": \"get_current_time\", \"arguments\": {}}</tool_call>"
)

CAPITALS = {
    "france": "Paris", "germany": "Berlin", "italy": "Rome", "spain": "Madrid",
    "japan": "Tokyo", "china": "Beijing", "canada": "Ottawa",
    "australia": "Canberra", "england": "London",
    "the united kingdom": "London", "the united states": "Washington, D.C.",
}

_NUM = r"(-?\d+(?:\.\d+)?)"
_OPS = {
    "+": lambda a, b: a + b, "plus": lambda a, b: a + b,
    "-": lambda a, b: a - b, "minus": lambda a, b: a - b,
    "*": lambda a, b: a * b, "x": lambda a, b: a * b, "×": lambda a, b: a * b,
    "times": lambda a, b: a * b, "multiplied by": lambda a, b: a * b,
    "/": lambda a, b: a / b, "÷": lambda a, b: a / b,
    "divided by": lambda a, b: a / b,
}
_ARITH_RE = re.compile(
    _NUM + r"\s*(multiplied by|divided by|plus|minus|times|[+\-*x×/÷])\s*" + _NUM,
    re.IGNORECASE)
_OK_RE = re.compile(
    r"\b(say|reply|respond|answer|return|output|print)\b[^.?!]*?\bok\b", re.IGNORECASE)
_CAP_RE = re.compile(r"capital (?:city )?of ([a-z][a-z .]*?)\s*(?:[?.!,]|$)", re.IGNORECASE)

_PIECE_RE = re.compile(r"\s*\S+")


def tokenize(text):
    return _PIECE_RE.findall(text)


def count_tokens(text):
    return len(tokenize(text or ""))


def _fmt(v):
    if abs(v - round(v)) < 1e-9:
        return str(int(round(v)))
    return f"{v:.6g}"


def known_answer(question):
    """Return a correct short answer for a few recognised questions, else None."""
    q = (question or "").strip()
    m = _ARITH_RE.search(q)
    if m:
        a, op, b = float(m.group(1)), m.group(2).lower(), float(m.group(3))
        try:
            res = _OPS[op](a, b)
        except ZeroDivisionError:
            return "Division by zero is undefined."
        sym = {"plus": "+", "minus": "-", "times": "×", "multiplied by": "×",
               "x": "×", "*": "×", "divided by": "/", "÷": "/"}.get(op, op)
        return f"{_fmt(a)} {sym} {_fmt(b)} = {_fmt(res)}. The answer is {_fmt(res)}."
    m = _CAP_RE.search(q)
    if m:
        country = m.group(1).strip().lower()
        cap = CAPITALS.get(country) or CAPITALS.get("the " + country)
        if cap:
            name = m.group(1).strip()
            return f"The capital of {name} is {cap}."
    if _OK_RE.search(q):
        return "OK"
    return None


def _rng_for(prompt, temperature, seed):
    if temperature and temperature > 0:
        return random.Random(seed) if seed is not None else random.Random()
    h = hashlib.sha256((prompt or "").encode("utf-8", "replace")).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def filler(rng):
    sentences = []
    for _ in range(rng.randint(3, 5)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 12))]
        words[0] = words[0].capitalize()
        sentences.append(" ".join(words) + ".")
    return " ".join(sentences)


def reasoning_text(question):
    q = " ".join((question or "").split())[:80]
    return f"The user asks: \"{q}\". I should answer directly and concisely."


def _continue(tokens, rng, until):
    """Extend an answer with more filler sentences until it holds ``until`` tokens."""
    while len(tokens) < until:
        tokens.extend(tokenize(" " + filler(rng)))
    return tokens


def generate(question, prompt, max_tokens, temperature=0.0, seed=None, faults=None,
             min_tokens=0, ignore_eos=False):
    """Return (tokens, finish_reason).

    question: the text used to detect known questions (last user message);
    prompt:   the full prompt (seeds the filler text).
    min_tokens / ignore_eos: as vLLM's sampling parameters. The answer's end
    is its end-of-sequence token: ``ignore_eos`` never stops there (the answer
    runs to ``max_tokens``, finish "length"); ``min_tokens`` keeps generating
    past it and stops at the first sentence end after ``min_tokens``.
    """
    faults = faults or {}
    rng = _rng_for(prompt, temperature, seed)
    text = known_answer(question)
    if text is None:
        text = filler(rng)
    tokens = tokenize(text)

    if "tool_xml" in faults:
        tokens = tokens[:1] + [" " + TOOL_XML] + tokens[1:]
    if "garbled" in faults:
        start = min(max(1, len(tokens) // 2), 4)
        grng = random.Random(len(tokens) * 7919 + 13)
        junk = []
        for i in range(12):
            p = grng.choice(CJK_PIECES)
            if i % 4 == 3:
                p = " " + grng.choice(WORDS) + p
            junk.append(p)
        tokens = tokens[:start] + junk
    finish = "stop"
    if ignore_eos and max_tokens is not None:
        tokens = _continue(tokens, rng, max_tokens)
    elif min_tokens and len(tokens) < min_tokens:
        tokens = _continue(tokens, rng, min_tokens)
        end = next((i for i in range(min_tokens - 1, len(tokens)) if tokens[i].endswith(".")), len(tokens) - 1)
        tokens = tokens[:end + 1]
    if "repeat" in faults:
        limit = max_tokens if max_tokens is not None else 256
        limit = min(limit, 256)
        base = tokens[:3]
        loop = tokenize(REPEAT_PHRASE)
        tokens = list(base)
        while len(tokens) < limit:
            tokens.extend(loop)
        tokens = tokens[:limit]
        finish = "length"
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens = tokens[:max(0, max_tokens)]
        finish = "length"
    return tokens, finish


def has_cjk(text):
    return any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in text)
