"""Synthetic slot filling: flight-booking requests with their slots tagged in BIO.

    "I would like to arrive in Taipei on November 2nd"
     O O     O    O  O      O  B-arrive_city O B-arrive_date I-arrive_date

A request is an opening phrase, a flight phrase, and two to five constituents in
random order, each drawn from many paraphrases. The same words fill different slots
depending on context: ``on November 2nd`` is an ``arrive_date`` after "arrive in
Taipei" but a ``depart_date`` after "leave Taipei"; a bare ``to``/``from`` decides
between ``arrive_city`` and ``depart_city``; ``at 7 am`` belongs to the nearest verb.
Everything is drawn from one ``random.Random(seed)``, so a seed fixes the data set.
"""

from __future__ import annotations

import random
from pathlib import Path

from .conll import TaggedSentence, write_conll

CITIES = [
    "Taipei", "Tokyo", "Osaka", "Seoul", "Busan", "Beijing", "Shanghai", "Hong Kong", "Singapore",
    "Bangkok", "Kuala Lumpur", "Jakarta", "Manila", "Hanoi", "Delhi", "Mumbai", "Dubai", "Doha",
    "Istanbul", "Athens", "Rome", "Milan", "Madrid", "Barcelona", "Lisbon", "Paris", "London",
    "Dublin", "Amsterdam", "Brussels", "Frankfurt", "Berlin", "Munich", "Zurich", "Vienna", "Prague",
    "Warsaw", "Stockholm", "Oslo", "Copenhagen", "Helsinki", "Reykjavik", "New York", "Boston",
    "Washington", "Atlanta", "Miami", "Chicago", "Denver", "Dallas", "Houston", "Phoenix",
    "Las Vegas", "Los Angeles", "San Francisco", "San Diego", "Seattle", "Portland", "Vancouver",
    "Toronto", "Montreal", "Mexico City", "Bogota", "Lima", "Santiago", "Buenos Aires",
    "Sao Paulo", "Rio de Janeiro", "Cairo", "Nairobi", "Johannesburg", "Cape Town", "Lagos",
    "Casablanca", "Sydney", "Melbourne", "Brisbane", "Perth", "Auckland", "Salt Lake City",
]
AIRLINES = [
    "United", "Delta", "American Airlines", "Alaska Airlines", "JetBlue", "Southwest", "Air Canada",
    "Lufthansa", "Air France", "KLM", "British Airways", "Iberia", "Swiss", "Turkish Airlines",
    "Emirates", "Qatar Airways", "Singapore Airlines", "Cathay Pacific", "EVA Air", "China Airlines",
    "Japan Airlines", "ANA", "Korean Air", "Qantas", "Air New Zealand", "LATAM", "Ryanair", "easyJet",
]
FARES = ["economy", "premium economy", "business", "business class", "first class", "coach",
         "basic economy", "the cheapest fare", "a refundable fare", "economy plus"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES_OF_DAY = ["morning", "afternoon", "evening", "night"]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _date(r: random.Random) -> str:
    day, month = r.randint(1, 28), r.choice(MONTHS)
    return r.choice([
        f"{month} {_ordinal(day)}", f"{month} {day}", f"the {_ordinal(day)} of {month}",
        f"{_ordinal(day)} {month}", f"next {r.choice(WEEKDAYS)}", f"this {r.choice(WEEKDAYS)}",
        r.choice(WEEKDAYS), "tomorrow", "the day after tomorrow", f"{r.choice(WEEKDAYS)} {month} {day}",
    ])


def _time(r: random.Random) -> str:
    hour = r.randint(1, 12)
    return r.choice([
        f"{hour} am", f"{hour} pm", f"{hour}:{r.choice(['00', '15', '30', '45'])} {r.choice(['am', 'pm'])}",
        f"{hour} o'clock", "noon", "midnight", f"{hour} in the {r.choice(TIMES_OF_DAY[:3])}",
    ])


# Constituents: (words with {slot} holes, slots). Lower-case slot names are the tags.
_DEPART_CITY = ["from {depart_city}", "leaving {depart_city}", "leaving from {depart_city}",
                "departing from {depart_city}", "out of {depart_city}", "that leaves {depart_city}",
                "starting in {depart_city}", "flying out of {depart_city}"]
_ARRIVE_CITY = ["to {arrive_city}", "into {arrive_city}", "arriving in {arrive_city}", "going to {arrive_city}",
                "landing in {arrive_city}", "heading to {arrive_city}", "with destination {arrive_city}",
                "that gets to {arrive_city}"]
# Bare routes: position alone (first city, second city) decides the roles.
_ROUTE = ["{depart_city} to {arrive_city}", "between {depart_city} and {arrive_city}",
          "from {depart_city} to {arrive_city}", "to {arrive_city} from {depart_city}",
          "{depart_city} - {arrive_city}", "from {depart_city} into {arrive_city}"]
_STOP_CITY = ["with a stopover in {stop_city}", "via {stop_city}", "stopping in {stop_city}",
              "connecting through {stop_city}", "with a layover in {stop_city}"]
_DEPART_WHEN = ["leaving on {depart_date}", "departing {depart_date}", "on {depart_date}",
                "leaving {depart_date}", "leaving at {depart_time}", "that departs at {depart_time}",
                "leaving on {depart_date} at {depart_time}", "departing {depart_date} around {depart_time}",
                "taking off at {depart_time}", "leaving in the {depart_time}"]
_ARRIVE_WHEN = ["arriving on {arrive_date}", "arriving {arrive_date}", "that arrives by {arrive_time}",
                "arriving before {arrive_time}", "landing at {arrive_time}", "getting there on {arrive_date}",
                "arriving on {arrive_date} by {arrive_time}", "getting in around {arrive_time}"]
_RETURN = ["returning {return_date}", "returning on {return_date}", "coming back on {return_date}",
           "and back on {return_date}", "with a return on {return_date}"]
_AIRLINE = ["on {airline}", "with {airline}", "flying {airline}", "operated by {airline}"]
_FARE = ["in {fare_class}", "{fare_class} seats", "with {fare_class}", "booked in {fare_class}"]
# Whole clauses in which the verb decides the role of the city and the date that follow.
_CLAUSES = [
    "arrive in {arrive_city} on {arrive_date}", "arrive in {arrive_city} by {arrive_time}",
    "get to {arrive_city} on {arrive_date}", "be in {arrive_city} on {arrive_date}",
    "leave {depart_city} on {depart_date}", "leave {depart_city} at {depart_time}",
    "fly out of {depart_city} on {depart_date}", "fly from {depart_city} to {arrive_city}",
    "go from {depart_city} to {arrive_city} on {depart_date}", "fly to {arrive_city} from {depart_city}",
    "travel to {arrive_city} on {depart_date}", "land in {arrive_city} on {arrive_date} at {arrive_time}",
    "depart {depart_city} {depart_date} and arrive in {arrive_city} {arrive_date}",
]
_OPENERS_CLAUSE = ["I would like to", "I need to", "I want to", "I have to", "we need to", "can I",
                   "how can I", "please help me", "my wife and I want to", "is it possible to"]
_OPENERS_FLIGHT = ["show me", "I need", "find me", "list", "give me", "are there any", "what are the",
                   "I would like", "please book", "book me", "search for", "do you have", "what about"]
_FLIGHT_NOUNS = ["flights", "a flight", "the flights", "one way flights", "round trip flights",
                 "a ticket", "nonstop flights", "the cheapest flight", "a direct flight", "the earliest flight",
                 "the last flight", "any flights"]
_CLOSERS = ["", "", "", "please", "thanks", "if possible", "for two adults", "for next week", "for my family"]


def _fill(template: str, r: random.Random) -> tuple[list[str], list[str]]:
    """Expand ``{slot}`` holes into words with BIO tags; plain words get ``O``."""
    tokens, tags = [], []
    for word in template.split():
        if word.startswith("{") and word.endswith("}"):
            slot = word[1:-1]
            value = {
                "depart_city": lambda: r.choice(CITIES), "arrive_city": lambda: r.choice(CITIES),
                "stop_city": lambda: r.choice(CITIES), "depart_date": lambda: _date(r),
                "arrive_date": lambda: _date(r), "return_date": lambda: _date(r),
                "depart_time": lambda: _time(r) if "in the {" not in template else r.choice(TIMES_OF_DAY),
                "arrive_time": lambda: _time(r), "airline": lambda: r.choice(AIRLINES),
                "fare_class": lambda: r.choice(FARES),
            }[slot]()
            words = value.split()
            tokens += words
            tags += [f"B-{slot}"] + [f"I-{slot}"] * (len(words) - 1)
        else:
            tokens.append(word)
            tags.append("O")
    return tokens, tags


def slot_sentence(r: random.Random) -> TaggedSentence:
    """One random flight request."""
    if r.random() < 0.35:
        parts = [r.choice(_OPENERS_CLAUSE), r.choice(_CLAUSES)]
        extra_groups = [_AIRLINE, _FARE, _RETURN, _STOP_CITY]
    else:
        parts = [r.choice(_OPENERS_FLIGHT), r.choice(_FLIGHT_NOUNS)]
        extra_groups = [_DEPART_CITY, _ARRIVE_CITY, _DEPART_WHEN, _ARRIVE_WHEN, _AIRLINE, _FARE, _RETURN,
                        _STOP_CITY]
        if r.random() < 0.3:  # a route replaces the separate city phrases
            extra_groups = [_ROUTE if g is _DEPART_CITY else g for g in extra_groups if g is not _ARRIVE_CITY]
    chosen = r.sample(extra_groups, r.randint(1, min(4, len(extra_groups))))
    parts += [r.choice(group) for group in chosen]
    closer = r.choice(_CLOSERS)
    if closer:
        parts.append(closer)
    tokens, tags = [], []
    for part in parts:
        t, g = _fill(part, r)
        tokens += t
        tags += g
    if r.random() < 0.5:  # half the requests are typed in lower case, as in ATIS
        tokens = [t.lower() for t in tokens]
    return TaggedSentence(tokens, tags)


def slot_filling_data(n: int, seed: int = 0) -> list[TaggedSentence]:
    """``n`` flight requests; the same ``seed`` always gives the same sentences."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    r = random.Random(seed)
    return [slot_sentence(r) for _ in range(n)]


def write_slot_filling(directory: str | Path, n_train: int = 4000, n_dev: int = 500, n_test: int = 500,
                       seed: int = 0) -> dict[str, Path]:
    """Write ``train.conll``, ``dev.conll`` and ``test.conll`` (each from its own seed
    derived from ``seed``) into ``directory``; returns their paths by name."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for k, (name, n) in enumerate((("train", n_train), ("dev", n_dev), ("test", n_test))):
        paths[name] = directory / f"{name}.conll"
        write_conll(paths[name], slot_filling_data(n, seed + 1_000_003 * k))
    return paths
