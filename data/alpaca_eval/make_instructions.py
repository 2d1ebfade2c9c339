"""Writes instructions.json: a small offline AlpacaEval-format set (instruction, output, generator, dataset).

The instructions are in the style of AlpacaEval's (everyday requests, writing, reasoning, coding);
the baseline outputs were written by hand for this repository (generator "qrpo_handwritten"). The
set lets the AlpacaEval path run offline end to end; its numbers are not comparable to AlpacaEval 2's
805-instruction leaderboard.

    python data/alpaca_eval/make_instructions.py
"""

import json
from pathlib import Path

PAIRS = [
    ("What are the names of the planets in our solar system, in order from the Sun?",
     "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune."),
    ("Give three tips for staying focused while studying.",
     "1. Put your phone in another room and silence notifications.\n2. Work in 25-minute blocks with short breaks.\n"
     "3. Decide before you start exactly what you want to finish in the session."),
    ("Explain what photosynthesis is in two sentences.",
     "Photosynthesis is the process by which plants, algae and some bacteria turn light energy into chemical energy. "
     "Using sunlight, they combine carbon dioxide and water into glucose and release oxygen."),
    ("Write a haiku about autumn leaves.",
     "Red leaves drift and turn,\nthe maple lets go of summer,\nwind carries them home."),
    ("How do I convert Celsius to Fahrenheit?",
     "Multiply the Celsius temperature by 9/5 and add 32. For example, 20 °C × 9/5 + 32 = 68 °F."),
    ("Suggest a name for a small bakery that specialises in sourdough bread.",
     "\"Slow Rise Bakery\": it hints at the long fermentation that gives sourdough its flavour."),
    ("Write a Python function that returns the factorial of a non-negative integer.",
     "```python\ndef factorial(n: int) -> int:\n    if n < 0:\n        raise ValueError(\"n must be non-negative\")\n"
     "    result = 1\n    for k in range(2, n + 1):\n        result *= k\n    return result\n```"),
    ("What is the difference between weather and climate?",
     "Weather is the state of the atmosphere over hours or days (today's rain, tomorrow's heat). Climate is the "
     "average pattern of weather in a region over decades."),
    ("Draft a polite email asking a colleague to send the quarterly report by Friday.",
     "Subject: Quarterly report\n\nHi Sam,\n\nCould you send me the quarterly report by Friday? I need it to prepare "
     "Monday's review. Thanks a lot, and let me know if anything is holding it up.\n\nBest,\nAlex"),
    ("List four common sources of protein for vegetarians.",
     "Lentils, chickpeas, tofu and Greek yogurt."),
    ("Why is the sky blue?",
     "Sunlight is scattered by the molecules of the air, and short (blue) wavelengths are scattered much more than "
     "long (red) ones (Rayleigh scattering). Looking anywhere away from the Sun, we mostly see that scattered blue light."),
    ("Summarise the plot of Romeo and Juliet in three sentences.",
     "Two young people from the feuding Montague and Capulet families fall in love and marry in secret. A street "
     "fight leaves Juliet's cousin dead and Romeo banished, and a plan to reunite them goes wrong. Each believing the "
     "other dead, both take their own lives, and their deaths reconcile the families."),
    ("What is 15% of 240?", "15% of 240 is 36 (0.15 × 240)."),
    ("Give me a simple recipe for scrambled eggs.",
     "Whisk 2 eggs with a pinch of salt. Melt a knob of butter in a pan over low heat, add the eggs and stir gently "
     "with a spatula until just set but still soft, about 2 minutes. Serve at once."),
    ("Explain recursion to a ten-year-old.",
     "Recursion is when something is defined using a smaller version of itself. Like Russian dolls: to open the big "
     "doll you open it and find a smaller doll, and you do the same thing again until you reach the tiniest one."),
    ("Translate 'Where is the train station?' into French and Spanish.",
     "French: « Où est la gare ? »\nSpanish: «¿Dónde está la estación de tren?»"),
    ("What are the main causes of inflation?",
     "Demand growing faster than what the economy can produce (demand-pull), rising production costs such as energy "
     "or wages (cost-push), and expectations of future inflation that feed into prices and wages; rapid growth of the "
     "money supply can drive all three."),
    ("Write a short motivational message for someone starting a new job.",
     "Congratulations on the new job! Nobody expects you to know everything on day one: ask questions, learn the "
     "people as well as the work, and give yourself time. They chose you for a reason."),
    ("How can I reduce my household's energy use?",
     "Switch to LED bulbs, turn the heating down by one degree, wash clothes at 30 °C, unplug devices on standby, "
     "and seal draughts around windows and doors."),
    ("Classify these animals as mammals or birds: penguin, bat, ostrich, dolphin.",
     "Birds: penguin, ostrich. Mammals: bat, dolphin."),
    ("What does HTTP stand for and what is it used for?",
     "HyperText Transfer Protocol. It is the protocol web browsers and servers use to request and send web pages, "
     "images and other resources."),
    ("Give two arguments for and two against working from home.",
     "For: no commute, which saves time and money; more control over one's environment and schedule.\n"
     "Against: fewer spontaneous conversations with colleagues; a blurred line between work and private life."),
    ("Rewrite this sentence in the passive voice: 'The committee approved the new budget.'",
     "The new budget was approved by the committee."),
    ("Recommend three classic novels for someone who enjoys mysteries.",
     "The Hound of the Baskervilles (Arthur Conan Doyle), The Moonstone (Wilkie Collins) and And Then There Were None "
     "(Agatha Christie)."),
    ("What is the Pythagorean theorem?",
     "In a right triangle, the square of the hypotenuse equals the sum of the squares of the other two sides: "
     "a² + b² = c²."),
    ("Write a SQL query that counts the orders per customer in a table named orders.",
     "```sql\nSELECT customer_id, COUNT(*) AS order_count\nFROM orders\nGROUP BY customer_id;\n```"),
    ("How often should I water a cactus?",
     "Water thoroughly only when the soil is completely dry: roughly every two to three weeks in spring and summer, "
     "and once a month or less in winter."),
    ("Come up with a riddle whose answer is 'a shadow'.",
     "I follow you all day but vanish at night; the brighter the sun, the darker I get. What am I?"),
    ("Explain the difference between a virus and a bacterium.",
     "Bacteria are single-celled living organisms that can reproduce on their own; many are harmless and antibiotics "
     "can kill harmful ones. Viruses are much smaller, are not cells, and can only multiply inside a host's cells; "
     "antibiotics do not work on them."),
    ("Plan a one-day itinerary for a first visit to Rome.",
     "Morning: the Colosseum and the Roman Forum. Lunch near Campo de' Fiori. Afternoon: the Pantheon, Piazza Navona "
     "and the Trevi Fountain. Evening: sunset from the Spanish Steps and dinner in Trastevere."),
    ("What is a good way to start learning a musical instrument as an adult?",
     "Pick an instrument you love listening to, take a few lessons to learn good posture and technique, and practise "
     "15-20 minutes every day with songs you enjoy rather than long irregular sessions."),
    ("Describe the water cycle briefly.",
     "Water evaporates from oceans and lakes, condenses into clouds, falls as rain or snow, and flows back through "
     "rivers and groundwater to the sea, where the cycle starts again."),
]


def main() -> None:
    rows = [{"instruction": q, "output": a, "generator": "qrpo_handwritten", "dataset": "qrpo_offline"} for q, a in PAIRS]
    out = Path(__file__).with_name("instructions.json")
    out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} instructions to {out}")


if __name__ == "__main__":
    main()
