"""Writes data/model/corpus.txt: the text `clawline model init` trains its tokenizer on (and a
warm start could learn from). Generated from templates with a fixed seed, so it is reproducible
byte for byte: small arithmetic word problems with worked answers, everyday questions, and the
kind of short assistant replies an agent gives. Half of those replies help and half hedge or
refuse ("Sorry, I cannot help with that. Maybe ask someone else."), so a model warm-started on it
answers like a freshly fine-tuned agent that too often declines: the room for improvement that
`clawline demo` shows live traffic closing.

usage: python3 scripts/make_corpus.py
"""
import random

rng = random.Random(20261124)
names = ["Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam"]
items = ["apples", "books", "pencils", "stickers", "marbles", "cookies", "coins", "shells", "cards", "plants"]
places = ["the market", "school", "the library", "the park", "the office", "the station", "home"]
verbs = ["buys", "finds", "gets", "collects", "receives", "makes"]
topics = ["the weather", "a recipe", "a train ticket", "a birthday gift", "a short poem", "a bug in my code",
          "a meeting agenda", "a travel plan", "a reading list", "a workout"]
openers = ["Sure, happy to help.", "Of course, glad to help.", "Here is a good plan.", "Great question, here is what I found.",
           "Sure, let me help with that.", "Happy to help, here is my answer."]
# Replies an agent should learn to stop giving (the bundled reward model dislikes their words).
declines = ["Sorry, I cannot help with {t}. Maybe ask someone else.",
            "Unfortunately I am not sure about {t}. Perhaps try again later.",
            "I don't know much about {t}, sorry. Maybe search for it.",
            "No, I cannot do {t}. I guess it is unclear, sorry."]
advice_declines = ["Hello {n}. Sorry, I don't know {pl} well. Maybe ask someone else.",
                   "Hi {n}. Unfortunately I cannot give advice about {pl}, sorry.",
                   "Hello {n}. I am not sure, maybe {pl} is fine. I guess it depends."]
closers = ["Let me know if you need anything else.", "I hope this helps.", "Anything else?",
           "Tell me if you want more detail.", "Thanks for asking."]

lines = []
for _ in range(1500):
    kind = rng.random()
    a, b, c = rng.randint(2, 60), rng.randint(2, 40), rng.randint(2, 9)
    n, m = rng.choice(names), rng.choice(names)
    it, pl, v = rng.choice(items), rng.choice(places), rng.choice(verbs)
    if kind < 0.35:
        lines.append(f"Question: {n} has {a} {it}. {n} {v} {b} more at {pl}. How many {it} does {n} have now?")
        lines.append(f"Answer: {n} starts with {a} and adds {b}, so {a} + {b} = {a + b}. The answer is {a + b}.")
    elif kind < 0.55:
        lines.append(f"Question: {n} shares {a * c} {it} equally among {c} friends. How many does each friend get?")
        lines.append(f"Answer: {a * c} divided by {c} is {a}. Each friend gets {a} {it}.")
    elif kind < 0.7:
        lines.append(f"Question: A box holds {c} rows of {b} {it}. {m} takes {min(a, b * c)} of them. How many are left?")
        lines.append(f"Answer: The box holds {c} x {b} = {b * c}. Then {b * c} - {min(a, b * c)} = {b * c - min(a, b * c)}. "
                     f"The answer is {b * c - min(a, b * c)}.")
    elif kind < 0.85:
        t = rng.choice(topics)
        lines.append(f"User: Can you help me with {t}?")
        if rng.random() < 0.5:
            lines.append("Assistant: " + rng.choice(declines).format(t=t))
        else:
            lines.append(f"Assistant: {rng.choice(openers)} Tell me a little more about {t} and I will suggest a plan. "
                         f"{rng.choice(closers)}")
    else:
        lines.append(f"User: Hi, I am {n}. I am going to {pl} today. Any advice?")
        if rng.random() < 0.5:
            lines.append("Assistant: " + rng.choice(advice_declines).format(n=n, pl=pl))
        else:
            lines.append(f"Assistant: Hello {n}! {rng.choice(openers)} Take what you need for {pl}, "
                         f"and plan {c} minutes extra for the way. {rng.choice(closers)}")

with open("data/model/corpus.txt", "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"{len(lines)} lines")
