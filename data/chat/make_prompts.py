"""Regenerate prompts.jsonl, the demo chat prompt set (deterministic): python data/chat/make_prompts.py

Varied everyday instructions (advice, explanation, writing, planning, comparison, feedback) built from
hand-written templates and topics; 15% of them, chosen at random with a fixed seed, form the eval split.
"""

import json
import random
from pathlib import Path

TEMPLATES = {
    "advice": [
        "Give me three tips for {activity}.",
        "I'm nervous about {event}. Any advice?",
        "How can I get better at {skill}?",
        "What are good ways to relax after {stressor}?",
        "What should I keep in mind when {activity}?",
        "My friend is struggling with {struggle}. How can I support them?",
    ],
    "explain": [
        "Explain {concept} to a ten-year-old.",
        "What is {concept}, in two or three sentences?",
        "Why does {phenomenon}?",
        "What is the difference between {pair}?",
        "How does {device} work?",
        "Explain {concept} using a simple analogy.",
        "What are common misconceptions about {concept}?",
        "Tell me a fun fact about {animal}.",
        "Tell me briefly about the history of {invention}.",
    ],
    "social": [
        "How do I politely {social}?",
        "How can I kindly tell {person} that {feedback}?",
    ],
    "write": [
        "Write a short thank-you note to {person} for {favour}.",
        "Write a two-line poem about {subject}.",
        "Write a friendly message inviting {person} to {gathering}.",
        "Write the opening lines of a short story about {subject}.",
        "Write a haiku about {subject}.",
        "Write a one-paragraph product description for {product}.",
        "Write an encouraging message for someone who is {situation}.",
        "Describe {place} in a few vivid sentences.",
        "Write a short toast for {celebration}.",
    ],
    "plan": [
        "Plan a simple weekend of {theme} for two people.",
        "Suggest a quick dinner I can make with {ingredients}.",
        "Outline a one-week plan to start {habit}.",
        "Plan a small birthday surprise for {person}.",
        "Give me a packing list for {trip}.",
        "Suggest a healthy breakfast with {ingredients}.",
        "Summarise the main benefits of {habit}.",
    ],
    "opinion": [
        "What do you think about {topic}?",
        "Is it a good idea to {decision}? Give pros and cons.",
        "Review this idea briefly: {idea}.",
        "What are the arguments for and against {topic}?",
    ],
}
FILLERS = {
    "activity": ["learning a new language", "running a first 5k", "working from home", "studying for exams",
                 "keeping houseplants alive", "saving money each month", "cooking for a big family", "hiking in the rain"],
    "event": ["a job interview tomorrow", "giving a speech at a wedding", "my first day at a new school",
              "meeting my partner's parents", "a dentist appointment", "moving to a new city"],
    "skill": ["public speaking", "drawing faces", "chess", "writing emails", "listening", "time management", "photography"],
    "struggle": ["a breakup", "losing their job", "feeling lonely after moving", "stress at work", "a long illness"],
    "concept": ["photosynthesis", "inflation", "gravity", "the internet", "vaccines", "democracy", "compound interest",
                "recycling", "machine learning", "the water cycle", "black holes", "sleep", "electricity",
                "the immune system"],
    "stressor": ["a long day at work", "an argument with a friend", "a difficult exam", "a crowded commute",
                 "a week of bad sleep", "a stressful family visit"],
    "celebration": ["my sister's wedding", "a colleague's retirement", "my parents' anniversary",
                    "a friend's graduation", "a team's product launch", "a new year's dinner"],
    "phenomenon": ["the sky look blue", "bread rise", "ice float on water", "the moon change shape", "cats purr",
                   "leaves change colour in autumn"],
    "pair": ["weather and climate", "a virus and a bacterium", "a loan and a grant", "baking soda and baking powder",
             "a lake and a pond", "speed and velocity"],
    "person": ["my neighbour", "my grandmother", "a former teacher", "my team at work", "a new colleague", "my best friend"],
    "favour": ["watering my plants", "helping me move", "a birthday gift", "their advice last month", "covering my shift"],
    "subject": ["the ocean at dawn", "a rainy Sunday", "an old dog", "the first snow", "city lights", "a cup of tea"],
    "product": ["a reusable water bottle", "a pair of hiking boots", "a desk lamp", "a wool scarf", "a board game for families"],
    "situation": ["starting a new job", "recovering from surgery", "training for a marathon", "learning to code",
                  "taking an important exam"],
    "place": ["a busy market", "a quiet library", "a mountain village", "a beach in winter", "a train station at night"],
    "gathering": ["a picnic on Saturday", "a board game night", "my birthday dinner", "a book club meeting",
                  "a housewarming party"],
    "device": ["a refrigerator", "a bicycle gear", "a microwave oven", "a compass", "noise-cancelling headphones",
               "a solar panel", "a thermostat", "an electric kettle"],
    "animal": ["octopuses", "honeybees", "penguins", "elephants", "crows", "sea otters", "owls", "tardigrades"],
    "invention": ["the printing press", "the bicycle", "the telephone", "paper money", "the light bulb",
                  "eyeglasses", "the compass", "vaccination"],
    "social": ["decline a wedding invitation", "ask my boss for a day off", "end a long phone call",
               "remind a friend about money they owe me", "say no to extra work", "ask neighbours to be quieter",
               "leave a party early", "turn down a second date"],
    "feedback": ["their presentation was too long", "I need more help with chores", "I'd like more time alone",
                 "their jokes hurt my feelings", "the plan won't work for me"],
    "theme": ["outdoor activities", "museums and food", "rest and reading", "cooking together", "exploring the city"],
    "ingredients": ["rice, eggs and spinach", "pasta and tomatoes", "lentils and carrots", "potatoes and cheese",
                    "chickpeas and bread"],
    "habit": ["meditating", "journaling", "drinking more water", "going to bed earlier", "reading every day"],
    "trip": ["a weekend of camping", "a business trip to a cold city", "a beach holiday", "a long train journey"],
    "topic": ["four-day work weeks", "learning music as an adult", "remote schooling", "city bike lanes",
              "keeping a gratitude journal"],
    "decision": ["adopt a dog while living in a small flat", "change careers at forty", "buy a used car",
                 "take a gap year", "learn two languages at once"],
    "idea": ["a neighbourhood tool-sharing library", "an app that reminds you to call friends",
             "a café where you pay by the hour", "free weekend repair workshops"],
}


def all_prompts():
    import itertools
    import re

    for category, templates in TEMPLATES.items():
        for template in templates:
            slots = re.findall(r"{(\w+)}", template)
            for values in itertools.product(*(FILLERS[s] for s in slots)):
                yield category, template.format(**dict(zip(slots, values)))


def main(total: int = 400, eval_fraction: float = 0.15, seed: int = 0):
    rng = random.Random(seed)
    prompts = sorted(set(all_prompts()))
    rng.shuffle(prompts)
    chosen = prompts[:total]
    n_eval = int(len(chosen) * eval_fraction)
    out = Path(__file__).with_name("prompts.jsonl")
    with out.open("w") as f:
        for i, (category, prompt) in enumerate(chosen):
            split = "eval" if i < n_eval else "train"
            f.write(json.dumps({"id": f"chat-{i:04d}", "prompt": prompt, "category": category, "split": split}) + "\n")
    print(f"wrote {len(chosen)} prompts ({n_eval} eval) to {out}")


if __name__ == "__main__":
    main()
