#!/usr/bin/env python3
"""Writes benches/data/reward-texts.txt: the assistant answers the reward benchmark scores.

512 answers (a multiple of every benchmarked batch size), one per line, of mixed length: about a
third short (10-25 words), a third medium (25-60) and a third long (60-120), on a dozen everyday
topics, composed from the sentence pools below by a seeded generator, so the file is the same on
every run. Python's `random.Random(seed)` is stable across versions for the calls used here.

    python benches/python/make_reward_texts.py            # rewrites the committed file
"""
import argparse
import os
import random

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.normpath(os.path.join(ROOT, "benches", "data", "reward-texts.txt"))
COUNT = 512
SEED = 20240611

OPENERS = [
    "Sure!", "Sure, here's how.", "Good question.", "Happy to help.", "Great question!",
    "Here is a short answer.", "Absolutely.", "Yes, you can.", "Short answer: it depends.",
    "Let me walk you through it.", "I'm sorry, but I can't be completely certain here.",
    "No, not quite.", "Thanks for the details.", "Here's what I'd suggest.",
]

CLOSERS = [
    "Let me know if you want more detail.", "Hope that helps!",
    "If anything is unclear, just ask.", "Feel free to share your code if it still fails.",
    "I can write a full example if you'd like.", "Good luck!",
    "Does that answer your question?", "Tell me which option you pick and I'll go deeper.",
]

TOPICS = {
    "python": [
        "In Python, a list comprehension such as [x * 2 for x in items] is usually clearer than a loop with append.",
        "The error means the variable was used before it was assigned, so move the assignment above the if statement.",
        "Use a virtual environment with python -m venv .venv so each project keeps its own packages.",
        "Dictionaries keep insertion order since Python 3.7, so you can rely on it when you iterate.",
        "If the file is large, read it line by line with a for loop instead of calling read() once.",
        "The with statement closes the file for you, even when an exception is raised inside the block.",
        "You can sort a list of dicts by a key with sorted(rows, key=lambda r: r['age']).",
        "Type hints do not change how the code runs, but tools like mypy can check them before you ship.",
        "A KeyError means the key is missing; dict.get(key, default) returns a fallback instead of raising.",
        "For concurrent I/O, asyncio with aiohttp is usually faster than starting one thread per request.",
        "Run pip freeze > requirements.txt to record the exact versions you have installed.",
        "f-strings like f\"{name}: {score:.2f}\" are the most readable way to format numbers.",
    ],
    "rust": [
        "The borrow checker complains because you hold a reference into the vector while pushing to it.",
        "Clone the value or restructure the loop so the mutable borrow ends before the next one starts.",
        "Use Result and the ? operator to pass errors up instead of calling unwrap everywhere.",
        "An Arc<Mutex<T>> lets several threads share and mutate the same data safely.",
        "cargo clippy catches many common mistakes, and cargo fmt keeps the formatting consistent.",
        "Iterators in Rust are lazy, so nothing happens until you call collect, sum or a for loop.",
        "If compile times are slow, split the crate into a workspace and enable incremental builds.",
        "A String owns its bytes while a &str borrows them, so functions should usually take &str.",
        "Lifetimes only describe how long references are valid; they never extend how long a value lives.",
        "Tokio's spawn requires the future to be Send because it may move between worker threads.",
    ],
    "cooking": [
        "Salt the pasta water generously, about a tablespoon per four liters, before the pasta goes in.",
        "Let the steak rest for five minutes after cooking so the juices settle back into the meat.",
        "You can replace one egg with a tablespoon of ground flaxseed mixed with three tablespoons of water.",
        "Bake the cookies at 180 °C for 10 to 12 minutes, until the edges turn golden.",
        "Toast the spices in a dry pan for a minute to bring out much more flavor.",
        "If the sauce is too thin, simmer it uncovered for a few more minutes or stir in a little cornstarch slurry.",
        "Keep fresh herbs in a glass of water in the fridge, like flowers, and they last a week.",
        "Rice needs roughly one and a half cups of water per cup of rice, then twenty minutes on low heat.",
        "A pinch of salt in sweet recipes balances the sugar and makes the flavors stand out.",
        "Sourdough needs a lively starter; feed it twice a day for a few days before you bake.",
        "Sear the chicken skin side down without moving it so it crisps instead of sticking.",
    ],
    "travel": [
        "The cheapest way from the airport to the city center is usually the express train, about 30 minutes.",
        "Book the museum tickets online a few days ahead, because the queues in summer can take hours.",
        "Most countries in the Schengen area let you stay 90 days within any 180-day period without a visa.",
        "Pack layers: mornings in the mountains are cold even when the afternoons are warm.",
        "Tell your bank before you travel so your card is not blocked for unusual activity.",
        "Trains in Japan are very punctual, and a rail pass pays off if you take two or more long trips.",
        "Tap water is safe to drink in most of Western Europe, so bring a refillable bottle.",
        "For a three-day visit, spend one day on the old town, one on museums and one on a day trip.",
        "Travel insurance that covers medical costs abroad is worth it, especially for hiking trips.",
        "Arrive at the airport two hours early for international flights and three during holidays.",
    ],
    "math": [
        "The derivative of x squared is 2x, so the slope at x = 3 is 6.",
        "To solve 2x + 5 = 17, subtract 5 from both sides and divide by 2, which gives x = 6.",
        "The probability of rolling two sixes with fair dice is 1/36, about 2.8 percent.",
        "A prime number has exactly two divisors, 1 and itself, so 1 is not prime.",
        "The area of a circle is pi times the radius squared, so a radius of 2 gives about 12.57.",
        "Compound interest grows as P(1 + r)^n, which is why starting early matters so much.",
        "The mean is sensitive to outliers, so the median is often a better summary of incomes.",
        "Matrix multiplication is not commutative: AB and BA are usually different.",
        "The sum of the first n positive integers is n(n + 1)/2, so 1 to 100 adds up to 5050.",
        "A standard deviation of zero means every value in the data set is the same.",
    ],
    "health": [
        "Most adults need seven to nine hours of sleep, and a regular schedule helps more than sleeping in.",
        "Drinking water through the day matters more than hitting an exact number of glasses.",
        "For a mild headache, rest, water and a standard dose of ibuprofen or paracetamol usually help.",
        "I'm not a doctor, so please see one if the pain lasts more than a few days or gets worse.",
        "Thirty minutes of brisk walking five days a week meets the basic activity guideline.",
        "Stretch after exercise rather than before, when your muscles are warm.",
        "Cutting back on sugary drinks is one of the simplest ways to reduce daily calories.",
        "If you feel chest pain or shortness of breath, call emergency services right away.",
        "Wash your hands for at least twenty seconds with soap, especially before eating.",
    ],
    "history": [
        "The Berlin Wall fell on 9 November 1989, and Germany reunified less than a year later.",
        "The Roman Empire in the west ended in 476, when the last emperor was deposed.",
        "The printing press, developed by Gutenberg around 1440, made books far cheaper to produce.",
        "World War I began in 1914 after the assassination of Archduke Franz Ferdinand in Sarajevo.",
        "The Apollo 11 mission landed the first humans on the Moon in July 1969.",
        "The Magna Carta of 1215 limited the power of the English king for the first time in writing.",
        "The Industrial Revolution started in Britain in the late 18th century with textiles and steam power.",
        "Ancient Egyptians built the pyramids at Giza more than 4,500 years ago.",
        "The French Revolution began in 1789 with the storming of the Bastille.",
    ],
    "writing": [
        "Start the email with the request in the first sentence, then give the background.",
        "Cut adverbs and use stronger verbs: 'sprinted' says more than 'ran quickly'.",
        "A cover letter should show how your experience solves the employer's specific problem.",
        "Use the active voice unless the actor is unknown or unimportant.",
        "Read your draft aloud; awkward sentences are much easier to hear than to see.",
        "Keep paragraphs short on screens, three or four sentences at most.",
        "End the presentation with one clear takeaway the audience should remember.",
        "Here is a friendlier version: 'Thanks for the quick reply, could we move the call to Friday?'",
        "A good title promises exactly what the article delivers, no more and no less.",
    ],
    "devops": [
        "Check the container logs with docker logs -f <name> to see why it keeps restarting.",
        "The port is already in use; find the process with lsof -i :8080 and stop it.",
        "Pin your base image to a specific tag so builds do not change under you.",
        "Use a .dockerignore file so the build context does not include node_modules or .git.",
        "In Kubernetes, a readiness probe keeps traffic away from a pod until it can serve requests.",
        "git rebase -i HEAD~3 lets you squash the last three commits into one.",
        "To undo the last commit but keep the changes, run git reset --soft HEAD~1.",
        "Set resource limits on every container so one service cannot starve the others.",
        "Rotate the leaked key immediately, then remove it from the history with a tool like git filter-repo.",
        "A 502 from the load balancer usually means the backend closed the connection or is not listening.",
    ],
    "finance": [
        "An emergency fund of three to six months of expenses protects you from taking on debt.",
        "Index funds spread your money over many companies and usually have very low fees.",
        "Pay off the card with the highest interest rate first; that saves the most money.",
        "A budget works best when you track spending for a month before setting limits.",
        "I can't give personal investment advice, but diversification lowers the risk of any single loss.",
        "Inflation of 3 percent halves the value of cash in roughly 23 years.",
        "Check whether your employer matches pension contributions; that match is free money.",
        "Fixed-rate mortgages cost a bit more at first but protect you if rates rise.",
    ],
    "science": [
        "The sky looks blue because air scatters short blue wavelengths more than red ones.",
        "Water boils at a lower temperature at altitude because the air pressure is lower.",
        "Photosynthesis turns carbon dioxide and water into sugar and oxygen using sunlight.",
        "Light from the Sun takes about eight minutes and twenty seconds to reach Earth.",
        "Vaccines train the immune system to recognize a pathogen without causing the disease.",
        "DNA is a double helix, and each strand carries the same information in complementary bases.",
        "Seasons happen because Earth's axis is tilted about 23.5 degrees, not because of distance to the Sun.",
        "Sound travels about 343 meters per second in air, far slower than light.",
        "Antibiotics work against bacteria but do nothing against viruses such as the flu.",
    ],
    "general": [
        "The capital of Australia is Canberra, not Sydney.",
        "There are 24 time zones in principle, but many countries use half-hour offsets too.",
        "A marathon is 42.195 kilometers long.",
        "Mount Everest is 8,849 meters tall according to the 2020 survey.",
        "Try restarting the router, then forget the network on your phone and reconnect.",
        "To remove a red wine stain, blot it, then cover it with salt or baking soda.",
        "Water your houseplants when the top two centimeters of soil feel dry.",
        "A good first chess opening to learn is the Italian Game, because its ideas are simple.",
        "Dogs need daily exercise; most breeds are happier with two walks than with one long one.",
        "Most phones let you turn on battery saver from the quick settings panel.",
    ],
}

LIST_INTROS = [
    "Here are the steps:", "A few options:", "You could try this:", "The main points are:",
]


def words(s):
    return len(s.split())


def answer(rng):
    kind = rng.choice(["short", "medium", "long"])
    lo, hi = {"short": (10, 25), "medium": (25, 60), "long": (60, 120)}[kind]
    target = rng.randint(lo, hi)
    topic = rng.choice(sorted(TOPICS))
    pool = TOPICS[topic][:]
    rng.shuffle(pool)
    parts = []
    if kind != "short" and rng.random() < 0.6:
        parts.append(rng.choice(OPENERS))
    numbered = kind == "long" and rng.random() < 0.3
    if numbered:
        parts.append(rng.choice(LIST_INTROS))
    n = 0
    for sentence in pool:
        if parts and words(" ".join(parts)) + words(sentence) > hi:
            continue
        n += 1
        parts.append(f"{n}. {sentence}" if numbered else sentence)
        if words(" ".join(parts)) >= target:
            break
    closer = rng.choice(CLOSERS)
    if kind != "short" and rng.random() < 0.4 and words(" ".join(parts)) + words(closer) <= hi:
        parts.append(closer)
    return " ".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--count", type=int, default=COUNT)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    texts = [answer(rng) for _ in range(args.count)]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    lengths = sorted(words(t) for t in texts)
    print(f"{len(texts)} texts, words min {lengths[0]} median {lengths[len(lengths) // 2]} "
          f"max {lengths[-1]} mean {sum(lengths) / len(lengths):.1f} -> {args.out}")


if __name__ == "__main__":
    main()
