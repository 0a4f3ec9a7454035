"""Generated domains: arithmetic word problems and calendar questions.

Every number comes from the caller's seeded RNG and every answer is computed (with integer
arithmetic or `datetime`), so the worked steps are always right.
"""

from __future__ import annotations

import calendar
import datetime as dt
import random

Pair = tuple[str, str]

PEOPLE = [("Alice", "she"), ("Ben", "he"), ("Chloe", "she"), ("David", "he"), ("Emma", "she"),
          ("Farid", "he"), ("Grace", "she"), ("Hiro", "he"), ("Isla", "she"), ("Jonas", "he"),
          ("Keira", "she"), ("Luis", "he"), ("Maya", "she"), ("Noah", "he"), ("Olga", "she"),
          ("Pedro", "he"), ("Quinn", "they"), ("Rosa", "she"), ("Sam", "they"), ("Tariq", "he")]
GOODS = [("notebook", "notebooks"), ("pen", "pens"), ("apple", "apples"), ("mug", "mugs"),
         ("ticket", "tickets"), ("sandwich", "sandwiches"), ("book", "books"),
         ("candle", "candles"), ("scarf", "scarves"), ("plant", "plants")]
SHAREABLE = ["marbles", "stickers", "cookies", "cards", "coins", "stamps", "sweets", "beads"]
VEHICLES = ["car", "bus", "train", "cyclist", "truck", "ferry"]
PURCHASES = ["bicycle", "jacket", "game", "pair of shoes", "guitar", "backpack"]


def _person(rng: random.Random) -> tuple[str, str, str]:
    name, pronoun = rng.choice(PEOPLE)
    verb_s = "" if pronoun == "they" else "s"  # "they pay" / "she pays"
    return name, pronoun, verb_s


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _answer(steps: list[str], result: int) -> str:
    return "\n".join(steps + [f"The answer is {result}."])


# ----------------------------------------------------------------------------- arithmetic templates

def shopping(rng: random.Random) -> Pair:
    name, pronoun, s = _person(rng)
    (_, item1), (_, item2) = rng.sample(GOODS, 2)
    a, b, p, q = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 15), rng.randint(2, 15)
    cost1, cost2 = a * p, b * q
    total = cost1 + cost2
    bill = min(x for x in (20, 50, 100, 200, 500) if x > total)
    question = (f"{name} buys {a} {item1} at ${p} each and {b} {item2} at ${q} each. "
                f"{pronoun.capitalize()} pay{s} with a ${bill} bill. How much change, in dollars, "
                f"does {name} get?")
    steps = [f"The {item1} cost {a} × ${p} = ${cost1}.",
             f"The {item2} cost {b} × ${q} = ${cost2}.",
             f"Together that is ${cost1} + ${cost2} = ${total}.",
             f"The change is ${bill} − ${total} = ${bill - total}."]
    return question, _answer(steps, bill - total)


def travel(rng: random.Random) -> Pair:
    vehicle = rng.choice(VEHICLES)
    s1, s2 = rng.randrange(20, 125, 5), rng.randrange(20, 125, 5)
    h1, h2 = rng.randint(1, 5), rng.randint(1, 4)
    d1, d2 = s1 * h1, s2 * h2
    question = (f"A {vehicle} travels at {s1} km/h for {_count(h1, 'hour')}, then at {s2} km/h "
                f"for {_count(h2, 'hour')}. How many kilometres does it travel in total?")
    steps = ["Distance = speed × time.",
             f"First part: {s1} × {h1} = {d1} km.",
             f"Second part: {s2} × {h2} = {d2} km.",
             f"Total: {d1} + {d2} = {d1 + d2} km."]
    return question, _answer(steps, d1 + d2)


def average_speed(rng: random.Random) -> Pair:
    vehicle = rng.choice(VEHICLES)
    speed, hours = rng.randrange(15, 130, 5), rng.randint(2, 8)
    distance = speed * hours
    question = (f"A {vehicle} covers {distance} km in {hours} hours at a steady pace. "
                f"What is its speed in km/h?")
    steps = ["Speed = distance ÷ time.", f"{distance} ÷ {hours} = {speed} km/h."]
    return question, _answer(steps, speed)


def sharing(rng: random.Random) -> Pair:
    name, pronoun, s = _person(rng)
    thing = rng.choice(SHAREABLE)
    friends, each = rng.randint(3, 12), rng.randint(3, 25)
    left = rng.randint(0, friends - 1)
    total = friends * each + left
    ask_left = rng.random() < 0.5
    tail = "How many are left over?" if ask_left else "How many does each friend get?"
    question = (f"{name} has {total} {thing} and shares them equally among {friends} friends, "
                f"giving out as many as possible. {tail}")
    steps = [f"Divide {total} by {friends}: {friends} × {each} = {friends * each}, "
             f"which is the largest multiple of {friends} not above {total}.",
             f"So each friend gets {each} {thing}, and {total} − {friends * each} = {left} "
             f"{'is' if left == 1 else 'are'} left over."]
    return question, _answer(steps, left if ask_left else each)


def discount(rng: random.Random) -> Pair:
    _, item = rng.choice(GOODS)
    price, percent = rng.randrange(20, 420, 20), rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 75])
    off = price * percent // 100  # price is a multiple of 20, so this is exact
    question = (f"A set of {item} normally costs ${price}. It is on sale for {percent}% off. "
                f"What is the sale price in dollars?")
    steps = [f"{percent}% of ${price} is {price} × {percent} ÷ 100 = ${off}.",
             f"The sale price is ${price} − ${off} = ${price - off}."]
    return question, _answer(steps, price - off)


def percent_of_group(rng: random.Random) -> Pair:
    size, percent = rng.randrange(20, 620, 20), rng.choice([5, 10, 15, 20, 25, 35, 45, 60, 80])
    group = rng.choice(["students in a school", "members of a club", "runners in a race",
                        "visitors to a museum", "employees of a company"])
    part = size * percent // 100
    question = (f"There are {size} {group}. {percent}% of them wear glasses. "
                f"How many do not wear glasses?")
    steps = [f"{percent}% of {size} is {size} × {percent} ÷ 100 = {part}.",
             f"Those without glasses: {size} − {part} = {size - part}."]
    return question, _answer(steps, size - part)


def savings(rng: random.Random) -> Pair:
    name, pronoun, s = _person(rng)
    start, weekly, weeks = rng.randrange(10, 200, 5), rng.randrange(5, 60, 5), rng.randint(2, 12)
    saved = weekly * weeks
    spend = rng.randrange(5, start + saved, 5)
    purchase = rng.choice(PURCHASES)
    question = (f"{name} has ${start}. {pronoun.capitalize()} save{s} ${weekly} every week for "
                f"{weeks} weeks, then spend{s} ${spend} on a {purchase}. How many dollars does "
                f"{name} have left?")
    steps = [f"Savings: {weeks} × ${weekly} = ${saved}.",
             f"Before buying: ${start} + ${saved} = ${start + saved}.",
             f"After buying: ${start + saved} − ${spend} = ${start + saved - spend}."]
    return question, _answer(steps, start + saved - spend)


def fencing(rng: random.Random) -> Pair:
    length, width, price = rng.randint(5, 60), rng.randint(3, 40), rng.randint(2, 25)
    perimeter = 2 * (length + width)
    question = (f"A rectangular garden is {length} m long and {width} m wide. Fencing costs "
                f"${price} per metre. How much does it cost, in dollars, to fence the whole "
                f"garden?")
    steps = [f"Perimeter = 2 × ({length} + {width}) = {perimeter} m.",
             f"Cost = {perimeter} × ${price} = ${perimeter * price}."]
    return question, _answer(steps, perimeter * price)


def ages(rng: random.Random) -> Pair:
    (older, _), (younger, _) = rng.sample(PEOPLE, 2)
    young_age, gap, years = rng.randint(3, 40), rng.randint(1, 30), rng.randint(2, 15)
    future_sum = 2 * young_age + gap + 2 * years
    question = (f"{older} is {gap} years older than {younger}. In {years} years, their ages "
                f"will add up to {future_sum}. How old is {younger} now?")
    steps = [f"Let {younger}'s age now be x, so {older} is x + {gap}.",
             f"In {years} years: (x + {years}) + (x + {gap} + {years}) = {future_sum}.",
             f"So 2x + {gap + 2 * years} = {future_sum}, 2x = {future_sum - gap - 2 * years}, "
             f"and x = {young_age}."]
    return question, _answer(steps, young_age)


def recipe(rng: random.Random) -> Pair:
    per_item, batch, wanted = rng.randint(5, 40), rng.randint(4, 12), rng.randint(2, 10)
    batch_grams, target = per_item * batch, wanted * batch + rng.randint(0, 1) * batch // 2
    question = (f"A recipe uses {batch_grams} g of flour for {batch} muffins. How many grams of "
                f"flour are needed for {target} muffins?")
    steps = [f"Flour per muffin: {batch_grams} ÷ {batch} = {per_item} g.",
             f"For {target} muffins: {target} × {per_item} = {target * per_item} g."]
    return question, _answer(steps, target * per_item)


ARITHMETIC_TEMPLATES = [shopping, travel, average_speed, sharing, discount, percent_of_group,
                        savings, fencing, ages, recipe]


def arithmetic_pairs(rng: random.Random, count: int) -> list[Pair]:
    """`count` distinct problems, cycling through the templates so each is equally common."""
    pairs, seen = [], set()
    attempts = 0
    while len(pairs) < count and attempts < 50 * count:
        template = ARITHMETIC_TEMPLATES[attempts % len(ARITHMETIC_TEMPLATES)]
        attempts += 1
        pair = template(rng)
        if pair[0] not in seen:
            seen.add(pair[0])
            pairs.append(pair)
    return pairs


# ----------------------------------------------------------------------------- dates

REFERENCE = dt.date(2000, 1, 1)  # a Saturday; a fixed anchor makes the weekday steps checkable


def _fmt(day: dt.date) -> str:
    return f"{calendar.month_name[day.month]} {day.day}, {day.year}"


def _random_date(rng: random.Random, first_year: int = 1900, last_year: int = 2099) -> dt.date:
    start, end = dt.date(first_year, 1, 1), dt.date(last_year, 12, 31)
    return start + dt.timedelta(days=rng.randint(0, (end - start).days))


def weekday_of(rng: random.Random) -> Pair:
    day = _random_date(rng)
    offset = (day - REFERENCE).days
    shift = offset % 7
    weekday = calendar.day_name[day.weekday()]
    relation = "after" if offset >= 0 else "before"
    answer = (f"{_fmt(REFERENCE)} was a Saturday. "
              f"{_fmt(day)} is {_count(abs(offset), 'day')} {relation} it.\n"
              f"{offset} mod 7 = {shift}, so move {shift} weekday{'s' if shift != 1 else ''} "
              f"forward from Saturday.\nThe answer is {weekday}.")
    return f"What day of the week is {_fmt(day)}?", answer


def _days_in_year(year: int) -> int:
    return 366 if calendar.isleap(year) else 365


def days_between(rng: random.Random) -> Pair:
    first = _random_date(rng, 1950, 2060)
    second = first + dt.timedelta(days=rng.randint(1, 1500))
    total = (second - first).days
    question = f"How many days are there from {_fmt(first)} to {_fmt(second)}?"
    doy1, doy2 = first.timetuple().tm_yday, second.timetuple().tm_yday
    if first.year == second.year:
        steps = [f"{_fmt(first)} is day {doy1} of {first.year} and {_fmt(second)} is day {doy2}.",
                 f"{doy2} − {doy1} = {total}."]
    else:
        rest = _days_in_year(first.year) - doy1
        middle = [(y, _days_in_year(y)) for y in range(first.year + 1, second.year)]
        steps = [f"Days left in {first.year} after {_fmt(first)}: "
                 f"{_days_in_year(first.year)} − {doy1} = {rest}."]
        if len(middle) == 1:
            steps.append(f"The full year {middle[0][0]} has {middle[0][1]} days.")
        elif middle:
            listed = " + ".join(str(n) for _, n in middle)
            steps.append(f"Full years {middle[0][0]}–{middle[-1][0]}: {listed} = "
                         f"{sum(n for _, n in middle)}.")
        steps.append(f"{_fmt(second)} is day {doy2} of {second.year}.")
        steps.append(f"Total: {rest}" + (f" + {sum(n for _, n in middle)}" if middle else "")
                     + f" + {doy2} = {total}.")
    return question, "\n".join(steps + [f"The answer is {total} days."])


def days_after(rng: random.Random) -> Pair:
    start, n = _random_date(rng, 1950, 2060), rng.randint(3, 120)
    steps, day, left = [], start, n
    while True:  # walk month by month, the way one would on a paper calendar
        month_days = calendar.monthrange(day.year, day.month)[1]
        to_month_end = month_days - day.day
        if left <= to_month_end:
            day = day.replace(day=day.day + left)
            more = "more day" if steps else "day"
            steps.append(f"Adding {_count(left, more)} gives {_fmt(day)}.")
            break
        left -= to_month_end + 1
        day = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        if not left:
            steps.append(f"{_count(to_month_end + 1, 'day')} later it is {_fmt(day)}.")
            break
        steps.append(f"{_count(to_month_end + 1, 'day')} later it is {_fmt(day)} "
                     f"({_count(left, 'day')} to go).")
    assert day == start + dt.timedelta(days=n)
    question = f"What date is {n} days after {_fmt(start)}?"
    return question, "\n".join(steps + [f"The answer is {_fmt(day)}."])


def leap_year(rng: random.Random) -> Pair:
    year = rng.choice([rng.randint(1600, 2400), rng.randrange(1600, 2401, 100),
                       rng.randrange(1600, 2400, 4)])
    if year % 4:
        steps = [f"{year} is not divisible by 4, so it is not a leap year."]
    elif year % 100:
        steps = [f"{year} is divisible by 4 but not by 100, so it is a leap year."]
    elif year % 400:
        steps = [f"{year} is divisible by 100 but not by 400, so it is not a leap year."]
    else:
        steps = [f"{year} is divisible by 400, so it is a leap year."]
    assert ("not a leap" not in steps[0]) == calendar.isleap(year)
    verdict = "Yes" if calendar.isleap(year) else "No"
    return f"Is {year} a leap year?", "\n".join(steps + [f"The answer is {verdict}."])


def month_length(rng: random.Random) -> Pair:
    year, month = rng.randint(1800, 2200), rng.randint(1, 12)
    days = calendar.monthrange(year, month)[1]
    name = calendar.month_name[month]
    if month == 2:
        leap = "is" if calendar.isleap(year) else "is not"
        reason = f"February has 29 days in a leap year and 28 otherwise; {year} {leap} a leap year."
    else:
        reason = f"{name} has {days} days in every year, so also in {year}."
    return f"How many days are there in {name} {year}?", f"{reason}\nThe answer is {days}."


DATE_TEMPLATES = [weekday_of, days_between, days_after, leap_year, month_length]


def date_pairs(rng: random.Random, count: int) -> list[Pair]:
    pairs, seen, attempts = [], set(), 0
    while len(pairs) < count and attempts < 50 * count:
        pair = DATE_TEMPLATES[attempts % len(DATE_TEMPLATES)](rng)
        attempts += 1
        if pair[0] not in seen:
            seen.add(pair[0])
            pairs.append(pair)
    return pairs
