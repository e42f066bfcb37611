"""Writes data/prompts/reference.jsonl: the canary's reference answers (clawline-broadcaster
`--canary-references`). Selected from the bundled corpus (data/model/corpus.txt) by a fixed rule,
so it is reproducible byte for byte and in the corpus' style: the corpus' question/answer pairs are
sorted into seven kinds (help, decline, advice, advice declined, addition, sharing, box) and the
first four pairs of each kind in corpus order with a question not taken yet are kept: 28 lines.
The canary measures how likely a version finds these answers (teacher-forced, mean negative
log-likelihood per token); a version whose language broke finds them much less likely.

usage: python3 scripts/make_reference.py
"""
import json

PER_KIND = 4
DECLINES = ("Sorry", "Unfortunately", "I don't know", "No, I cannot", "I am not sure")
KINDS = ["help", "decline", "advice", "advice declined", "addition", "sharing", "box"]


def kind(question, answer):
    declined = any(d in answer for d in DECLINES)
    if question.startswith("Can you help me with"):
        return "decline" if declined else "help"
    if question.startswith("Hi, I am"):
        return "advice declined" if declined else "advice"
    if question.startswith("A box holds"):
        return "box"
    if " shares " in question:
        return "sharing"
    return "addition"


lines = open("data/model/corpus.txt").read().splitlines()
chosen = {k: [] for k in KINDS}
seen = set()
for ask, reply in zip(lines, lines[1:]):
    for q, a in (("User: ", "Assistant: "), ("Question: ", "Answer: ")):
        if ask.startswith(q) and reply.startswith(a):
            question, answer = ask[len(q):], reply[len(a):]
            k = kind(question, answer)
            if question not in seen and len(chosen[k]) < PER_KIND:
                seen.add(question)
                chosen[k].append((question, answer))

with open("data/prompts/reference.jsonl", "w") as f:
    f.write("# The canary's reference answers (scripts/make_reference.py selects them from data/model/corpus.txt).\n")
    for k in KINDS:
        assert len(chosen[k]) == PER_KIND, k
        for question, answer in chosen[k]:
            record = {"messages": [{"role": "user", "content": question}], "reference": answer}
            f.write(json.dumps(record) + "\n")
print(f"{PER_KIND * len(KINDS)} references")
