"""Deterministic generator of the bundled sample corpus (``data/sample/``), in the real xLAM shape.

Writes ``travel.jsonl`` and ``finance.jsonl``: :data:`ROWS_PER_FILE` lines each, one xLAM row
``{"id", "query", "answers", "tools"}`` per line, ``tools`` and ``answers`` as JSON *strings*,
flat parameter dicts with Python-ish types (``"str"``, ``"int, optional"``, ``"List[int]"``,
``"Tuple[float, float]"``, ``"Dict[str, int]"``...) and defaults on some optional parameters.

Each domain has a pool of functions; a row offers 2-5 candidate tools (the right one(s) plus
distractors from the same domain, shuffled) and has one call, or two parallel calls in about
15% of rows. Queries come from several templates per function with varied values, and the
argument values appear in the query text. Some rows pass an optional parameter's *default*
value explicitly and say so in the query (e.g. "in metric units"), so the masking stage has
defaults to perturb.

A few rows are deliberately bad, at the fixed 1-based line numbers in :data:`BAD_ROWS`.

Usage: ``python -m hammer_core.data.sample_data data/sample`` (same seed, same bytes).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hammer_core.artifacts import atomic_write_text

ROWS_PER_FILE = 200
PARALLEL_SHARE = 0.15
ID_OFFSETS = {"travel": 10_000, "finance": 20_000}  # ids are unique across both files

#: Deliberately bad rows: file -> {1-based line number: (expected reject reason, what is wrong)}.
BAD_ROWS: dict[str, dict[int, tuple[str, str]]] = {
    "travel.jsonl": {
        13: ("bad_json", "tools is a Python repr (single quotes), not JSON"),
        58: ("unknown_function",
             "the answer calls get_current_weather, which is not among the tools"),
        97: ("unknown_argument", "the get_current_weather call passes an undeclared 'country'"),
        142: ("empty_query", "the query is the empty string"),
        187: ("bad_json", "the line is cut in half: not JSON at all"),
    },
    "finance.jsonl": {
        21: ("bad_json", "tools is truncated JSON"),
        64: ("unknown_function", "the answer calls get_stock_price; the tool is get_stock_quote"),
        110: ("unknown_argument",
              "the calculate_loan_payment call passes an undeclared 'currency'"),
        151: ("empty_query", "the query is only whitespace"),
        176: ("missing_required_argument", "the calculate_loan_payment call omits 'years'"),
    },
}

_NO_DEFAULT = object()

Args = dict[str, Any]
Maker = Callable[[random.Random], tuple[str, Args]]


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    description: str
    default: Any = _NO_DEFAULT

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"description": self.description, "type": self.type}
        if self.default is not _NO_DEFAULT:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    params: tuple[Param, ...]
    make: Maker  # rng -> (query, arguments)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "parameters": {p.name: p.spec() for p in self.params}}


# --------------------------------------------------------------------------- value pools

CITIES = ["Paris", "Tokyo", "New York", "Lisbon", "Cairo", "Sydney", "Toronto", "Berlin",
          "Mumbai", "Buenos Aires", "Reykjavik", "Nairobi", "Seoul", "Mexico City", "Istanbul",
          "Vancouver", "Rome", "Bangkok"]
AIRPORTS = {"JFK": "New York", "LHR": "London", "CDG": "Paris", "HND": "Tokyo",
            "SYD": "Sydney", "YYZ": "Toronto", "FRA": "Frankfurt", "DXB": "Dubai",
            "SIN": "Singapore", "LAX": "Los Angeles", "GRU": "Sao Paulo", "NBO": "Nairobi"}
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "CAD", "AUD", "CHF", "INR", "MXN", "BRL"]
TIMEZONES = ["America/New_York", "Europe/London", "Asia/Tokyo", "Australia/Sydney",
             "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata", "America/Sao_Paulo"]
CUISINES = ["italian", "japanese", "mexican", "indian", "thai", "french", "vegan", "ethiopian"]
COUNTRIES = ["France", "Japan", "Thailand", "Kenya", "Mexico", "Turkey", "Vietnam", "Iceland",
             "Brazil", "Canada"]
NATIONALITIES = ["United States", "India", "Brazil", "Germany", "Japan", "Nigeria", "Canada",
                 "Australia"]
CAR_TYPES = ["SUV", "convertible", "minivan", "economy", "luxury"]
ATTRACTION_CATEGORIES = ["museums", "parks", "landmarks", "markets", "beaches", "nightlife"]
COMPANIES = {"AAPL": "Apple", "MSFT": "Microsoft", "GOOGL": "Alphabet", "AMZN": "Amazon",
             "TSLA": "Tesla", "NVDA": "Nvidia", "JPM": "JPMorgan Chase", "KO": "Coca-Cola",
             "NFLX": "Netflix", "V": "Visa"}
UNIT_PAIRS = [("kilograms", "pounds"), ("miles", "kilometers"), ("liters", "gallons"),
              ("celsius", "fahrenheit"), ("ounces", "grams"), ("feet", "meters")]
TAX_COUNTRIES = {"CA": "Canada", "GB": "the United Kingdom", "DE": "Germany", "AU": "Australia"}


def _date(rng: random.Random, after: dt.date | None = None) -> dt.date:
    if after is not None:
        return after + dt.timedelta(days=rng.randint(1, 14))
    return dt.date(2025, 1, 1) + dt.timedelta(days=rng.randint(0, 364))


def _money(rng: random.Random, lo: int, hi: int, step: int = 50) -> int:
    return rng.randrange(lo, hi + 1, step)


def _numbers(rng: random.Random) -> list[float | int]:
    n = rng.randint(4, 8)
    if rng.random() < 0.5:
        return [rng.randint(1, 99) for _ in range(n)]
    return [round(rng.uniform(1, 100), 1) for _ in range(n)]


def _fmt_list(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _one_of(rng: random.Random, *options: Callable[[], tuple[str, Args]]) -> tuple[str, Args]:
    return rng.choice(options)()


# --------------------------------------------------------------------------- travel


def _weather(rng: random.Random) -> tuple[str, Args]:
    city = rng.choice(CITIES)
    return _one_of(
        rng,
        lambda: (f"What's the weather like in {city} right now?", {"city": city}),
        lambda: (f"Is it raining in {city} at the moment?", {"city": city}),
        lambda: (f"Tell me the current temperature in {city} in imperial units.",
                 {"city": city, "units": "imperial"}),
        lambda: (f"How's the weather in {city} today? Give it to me in metric units.",
                 {"city": city, "units": "metric"}),
    )


def _forecast(rng: random.Random) -> tuple[str, Args]:
    city, days = rng.choice(CITIES), rng.randint(1, 10)
    return _one_of(
        rng,
        lambda: (f"Give me the {days}-day weather forecast for {city}.",
                 {"city": city, "days": days}),
        lambda: (f"What will the weather be in {city} over the next 3 days?",
                 {"city": city, "days": 3}),
        lambda: (f"I'm heading to {city} soon; what's the forecast?", {"city": city}),
    )


def _flights(rng: random.Random) -> tuple[str, Args]:
    origin, dest = rng.sample(sorted(AIRPORTS), 2)
    date = _date(rng).isoformat()
    n, cabin = rng.randint(2, 5), rng.choice(["business", "first", "premium economy"])
    base = {"origin": origin, "destination": dest, "departure_date": date}
    return _one_of(
        rng,
        lambda: (f"Find flights from {origin} to {dest} on {date}.", base),
        lambda: (f"Are there any flights {origin} -> {dest} departing {date}?", base),
        lambda: (f"I need {n} seats in {cabin} class from {origin} to {dest} on {date}.",
                 {**base, "passengers": n, "cabin_class": cabin}),
        lambda: (f"Search economy flights from {origin} to {dest} on {date} for 1 passenger.",
                 {**base, "passengers": 1, "cabin_class": "economy"}),
    )


def _hotels(rng: random.Random) -> tuple[str, Args]:
    city = rng.choice(CITIES)
    check_in = _date(rng)
    ci, co = check_in.isoformat(), _date(rng, after=check_in).isoformat()
    guests, price = rng.randint(1, 6), _money(rng, 80, 400, 10)
    base = {"city": city, "check_in": ci, "check_out": co}
    return _one_of(
        rng,
        lambda: (f"Find me a hotel in {city} from {ci} to {co}.", base),
        lambda: (f"Look for hotels in {city} for {guests} guests, checking in {ci} and out {co}, "
                 f"under ${price} a night.", {**base, "guests": guests, "max_price": price}),
        lambda: (f"Hotels in {city} between {ci} and {co} for 2 guests, please.",
                 {**base, "guests": 2}),
    )


def _currency(rng: random.Random) -> tuple[str, Args]:
    src, dst = rng.sample(CURRENCIES, 2)
    amount = rng.choice([_money(rng, 10, 5000, 10), round(rng.uniform(5, 999), 2)])
    args = {"amount": amount, "from_currency": src, "to_currency": dst}
    return _one_of(
        rng,
        lambda: (f"How much is {amount} {src} in {dst}?", args),
        lambda: (f"Convert {amount} {src} to {dst}.", args),
        lambda: (f"I have {amount} {src}; what's that worth in {dst}?", args),
    )


def _time_zone(rng: random.Random) -> tuple[str, Args]:
    city = rng.choice(CITIES)
    return _one_of(
        rng,
        lambda: (f"What time zone is {city} in?", {"city": city}),
        lambda: (f"Which time zone should I set my watch to when I land in {city}?",
                 {"city": city}),
    )


def _convert_time(rng: random.Random) -> tuple[str, Args]:
    src, dst = rng.sample(TIMEZONES, 2)
    time = f"{rng.randint(0, 23):02d}:{rng.choice([0, 15, 30, 45]):02d}"
    args = {"time": time, "from_timezone": src, "to_timezone": dst}
    return _one_of(
        rng,
        lambda: (f"If it's {time} in {src}, what time is it in {dst}?", args),
        lambda: (f"Convert {time} from {src} to {dst}.", args),
    )


def _restaurants(rng: random.Random) -> tuple[str, Args]:
    city, cuisine = rng.choice(CITIES), rng.choice(CUISINES)
    n, levels = rng.randint(3, 15), sorted(rng.sample([1, 2, 3, 4], 2))
    return _one_of(
        rng,
        lambda: (f"Find {cuisine} restaurants in {city}.", {"city": city, "cuisine": cuisine}),
        lambda: (f"Show me the top {n} places to eat in {city} with price level {levels[0]} or "
                 f"{levels[1]}.", {"city": city, "limit": n, "price_levels": levels}),
        lambda: (f"List 5 {cuisine} restaurants in {city}.",
                 {"city": city, "cuisine": cuisine, "limit": 5}),
    )


def _visa(rng: random.Random) -> tuple[str, Args]:
    nat, country = rng.choice(NATIONALITIES), rng.choice(COUNTRIES)
    args = {"nationality": nat, "destination_country": country}
    return _one_of(
        rng,
        lambda: (f"As a citizen of {nat}, do I need a visa to visit {country}?", args),
        lambda: (f"What are the visa requirements for {country} for travellers from {nat}?", args),
    )


def _airport(rng: random.Random) -> tuple[str, Args]:
    code = rng.choice(sorted(AIRPORTS))
    return _one_of(
        rng,
        lambda: (f"Tell me about the airport with code {code}.", {"iata_code": code}),
        lambda: (f"Which city is {code} airport in, and how many terminals does it have?",
                 {"iata_code": code}),
    )


def _car_rental(rng: random.Random) -> tuple[str, Args]:
    city, car = rng.choice(CITIES), rng.choice(CAR_TYPES)
    pickup = _date(rng)
    d1, d2 = pickup.isoformat(), _date(rng, after=pickup).isoformat()
    base = {"city": city, "pickup_date": d1, "dropoff_date": d2}
    return _one_of(
        rng,
        lambda: (f"I want to rent a car in {city} from {d1} to {d2}.", base),
        lambda: (f"Find a {car} rental in {city}, pick-up {d1}, drop-off {d2}.",
                 {**base, "car_type": car}),
        lambda: (f"Any compact cars available in {city} from {d1} until {d2}?",
                 {**base, "car_type": "compact"}),
    )


def _attractions(rng: random.Random) -> tuple[str, Args]:
    city, n = rng.choice(CITIES), rng.randint(3, 8)
    cats = rng.sample(ATTRACTION_CATEGORIES, 2)
    return _one_of(
        rng,
        lambda: (f"What are the must-see attractions in {city}?", {"city": city}),
        lambda: (f"List {n} {cats[0]} and {cats[1]} worth visiting in {city}.",
                 {"city": city, "categories": cats, "limit": n}),
        lambda: (f"Give me the top 10 {cats[0]} in {city}.",
                 {"city": city, "categories": [cats[0]], "limit": 10}),
    )


def _distance(rng: random.Random) -> tuple[str, Args]:
    a = [round(rng.uniform(-60, 60), 4), round(rng.uniform(-170, 170), 4)]
    b = [round(rng.uniform(-60, 60), 4), round(rng.uniform(-170, 170), 4)]
    base = {"point_a": a, "point_b": b}
    return _one_of(
        rng,
        lambda: (f"How far is ({a[0]}, {a[1]}) from ({b[0]}, {b[1]})?", base),
        lambda: (f"What's the distance in miles between ({a[0]}, {a[1]}) and ({b[0]}, {b[1]})?",
                 {**base, "unit": "miles"}),
        lambda: (f"Distance in km from ({a[0]}, {a[1]}) to ({b[0]}, {b[1]}), please.",
                 {**base, "unit": "km"}),
    )


TRAVEL: tuple[Function, ...] = (
    Function("get_current_weather",
             "Get the current weather conditions (temperature, humidity, wind, precipitation) "
             "for a city.",
             (Param("city", "str", "Name of the city, e.g. 'Paris'."),
              Param("units", "str, optional",
                    "Unit system for the results: 'metric' or 'imperial'. Default is 'metric'.",
                    "metric")),
             _weather),
    Function("get_weather_forecast", "Get the daily weather forecast for a city.",
             (Param("city", "str", "Name of the city to forecast."),
              Param("days", "int, optional", "Number of days to forecast, 1 to 14. Default is 3.",
                    3)),
             _forecast),
    Function("search_flights", "Search one-way flights between two airports on a given date.",
             (Param("origin", "str", "IATA code of the departure airport, e.g. 'JFK'."),
              Param("destination", "str", "IATA code of the arrival airport, e.g. 'CDG'."),
              Param("departure_date", "str", "Departure date in YYYY-MM-DD format."),
              Param("passengers", "int, optional", "Number of passengers. Default is 1.", 1),
              Param("cabin_class", "str, optional",
                    "Cabin class: 'economy', 'premium economy', 'business' or 'first'. "
                    "Default is 'economy'.", "economy")),
             _flights),
    Function("search_hotels", "Search available hotels in a city for a stay between two dates.",
             (Param("city", "str", "City where the hotel should be."),
              Param("check_in", "str", "Check-in date in YYYY-MM-DD format."),
              Param("check_out", "str", "Check-out date in YYYY-MM-DD format."),
              Param("guests", "int, optional", "Number of guests. Default is 2.", 2),
              Param("max_price", "float, optional", "Maximum price per night in USD.")),
             _hotels),
    Function("convert_currency",
             "Convert an amount of money from one currency to another at the latest rate.",
             (Param("amount", "float", "The amount of money to convert."),
              Param("from_currency", "str", "ISO 4217 code of the source currency, e.g. 'USD'."),
              Param("to_currency", "str", "ISO 4217 code of the target currency, e.g. 'EUR'.")),
             _currency),
    Function("get_time_zone", "Get the IANA time zone and current UTC offset of a city.",
             (Param("city", "str", "Name of the city."),),
             _time_zone),
    Function("convert_time", "Convert a clock time from one time zone to another.",
             (Param("time", "str", "Time of day in 24-hour HH:MM format."),
              Param("from_timezone", "str", "IANA name of the source time zone."),
              Param("to_timezone", "str", "IANA name of the target time zone.")),
             _convert_time),
    Function("search_restaurants", "Find restaurants in a city, optionally by cuisine and price.",
             (Param("city", "str", "City to search in."),
              Param("cuisine", "str, optional", "Type of cuisine, e.g. 'italian'."),
              Param("price_levels", "List[int], optional",
                    "Acceptable price levels from 1 (cheap) to 4 (very expensive)."),
              Param("limit", "int, optional", "Maximum number of results. Default is 5.", 5)),
             _restaurants),
    Function("get_visa_requirements",
             "Look up whether travellers of a given nationality need a visa for a country.",
             (Param("nationality", "str", "Country of citizenship of the traveller."),
              Param("destination_country", "str", "Country the traveller wants to visit.")),
             _visa),
    Function("get_airport_info",
             "Get details about an airport: name, city, country and terminals.",
             (Param("iata_code", "str", "Three-letter IATA airport code."),),
             _airport),
    Function("find_car_rentals", "Find rental cars available in a city between two dates.",
             (Param("city", "str", "City where the car is picked up."),
              Param("pickup_date", "str", "Pick-up date in YYYY-MM-DD format."),
              Param("dropoff_date", "str", "Drop-off date in YYYY-MM-DD format."),
              Param("car_type", "str, optional",
                    "Kind of car, e.g. 'SUV' or 'convertible'. Default is 'compact'.",
                    "compact")),
             _car_rental),
    Function("get_tourist_attractions", "List popular tourist attractions in a city.",
             (Param("city", "str", "City to list attractions for."),
              Param("categories", "List[str], optional",
                    "Categories to include, e.g. ['museums', 'parks']."),
              Param("limit", "int, optional", "Maximum number of attractions. Default is 10.",
                    10)),
             _attractions),
    Function("calculate_distance",
             "Great-circle distance between two points given as (latitude, longitude).",
             (Param("point_a", "Tuple[float, float]", "First point as (latitude, longitude)."),
              Param("point_b", "Tuple[float, float]", "Second point as (latitude, longitude)."),
              Param("unit", "str, optional", "'km' or 'miles'. Default is 'km'.", "km")),
             _distance),
)


# --------------------------------------------------------------------------- finance


def _quote(rng: random.Random) -> tuple[str, Args]:
    symbol = rng.choice(sorted(COMPANIES))
    return _one_of(
        rng,
        lambda: (f"What's the current share price of {COMPANIES[symbol]} ({symbol})?",
                 {"symbol": symbol}),
        lambda: (f"Get me a live quote for {symbol}.", {"symbol": symbol}),
    )


def _history(rng: random.Random) -> tuple[str, Args]:
    symbol = rng.choice(sorted(COMPANIES))
    start = _date(rng)
    d1, d2 = start.isoformat(), (start + dt.timedelta(days=rng.randint(20, 200))).isoformat()
    base = {"symbol": symbol, "start_date": d1, "end_date": d2}
    return _one_of(
        rng,
        lambda: (f"Get {symbol} prices from {d1} to {d2}.", base),
        lambda: (f"Show weekly (1wk) prices for {symbol} between {d1} and {d2}.",
                 {**base, "interval": "1wk"}),
        lambda: (f"I need daily (1d) closing prices of {symbol} from {d1} to {d2}.",
                 {**base, "interval": "1d"}),
    )


def _loan(rng: random.Random) -> tuple[str, Args]:
    principal, rate, years = _money(rng, 5_000, 500_000, 500), rng.choice(
        [3.5, 4.25, 5.0, 5.75, 6.5, 7.1]), rng.choice([5, 10, 15, 20, 30])
    args = {"principal": principal, "annual_rate": rate, "years": years}
    return _one_of(
        rng,
        lambda: (f"What's the monthly payment on a ${principal} loan at {rate}% for {years} "
                 "years?", args),
        lambda: (f"I'm borrowing {principal} dollars over {years} years at an annual rate of "
                 f"{rate}%. How much will I pay each month?", args),
    )


def _compound(rng: random.Random) -> tuple[str, Args]:
    principal, pct, years = _money(rng, 1_000, 100_000, 100), rng.choice([2, 3, 4, 5, 6, 8]), \
        rng.randint(1, 30)
    base = {"principal": principal, "rate": pct / 100, "years": years}
    return _one_of(
        rng,
        lambda: (f"If I invest ${principal} at {pct}% compounded quarterly for {years} years, "
                 "what will it be worth?", {**base, "compounds_per_year": 4}),
        lambda: (f"Compute the value of ${principal} after {years} years at {pct}% interest "
                 "compounded monthly (12 times a year).", {**base, "compounds_per_year": 12}),
        lambda: (f"How much will ${principal} grow to in {years} years at {pct}% compounded "
                 "annually?", {**base, "compounds_per_year": 1}),
        lambda: (f"What's ${principal} worth after {years} years at {pct}% compound interest?",
                 base),
    )


def _income_tax(rng: random.Random) -> tuple[str, Args]:
    income = _money(rng, 20_000, 400_000, 1_000)
    code = rng.choice(sorted(TAX_COUNTRIES))
    return _one_of(
        rng,
        lambda: (f"How much income tax would I owe on ${income}?", {"income": income}),
        lambda: (f"Estimate the US tax for a married couple filing jointly with income of "
                 f"${income}.", {"income": income, "filing_status": "married_joint",
                                 "country": "US"}),
        lambda: (f"What's the income tax on {income} in {TAX_COUNTRIES[code]} ({code}) for a "
                 "single filer?", {"income": income, "filing_status": "single", "country": code}),
    )


def _units(rng: random.Random) -> tuple[str, Args]:
    src, dst = rng.choice(UNIT_PAIRS)
    if rng.random() < 0.5:
        src, dst = dst, src
    value = rng.choice([rng.randint(1, 500), round(rng.uniform(0.5, 250), 2)])
    args = {"value": value, "from_unit": src, "to_unit": dst}
    return _one_of(
        rng,
        lambda: (f"Convert {value} {src} to {dst}.", args),
        lambda: (f"How many {dst} is {value} {src}?", args),
    )


def _mean(rng: random.Random) -> tuple[str, Args]:
    nums = _numbers(rng)
    return _one_of(
        rng,
        lambda: (f"What's the average of {_fmt_list(nums)}?", {"numbers": nums}),
        lambda: (f"Compute the mean of these returns: {_fmt_list(nums)}.", {"numbers": nums}),
    )


def _stdev(rng: random.Random) -> tuple[str, Args]:
    nums = _numbers(rng)
    return _one_of(
        rng,
        lambda: (f"Standard deviation of {_fmt_list(nums)}?", {"numbers": nums}),
        lambda: (f"What's the population standard deviation of {_fmt_list(nums)}?",
                 {"numbers": nums, "sample": False}),
        lambda: (f"Compute the sample standard deviation of {_fmt_list(nums)}.",
                 {"numbers": nums, "sample": True}),
    )


def _median(rng: random.Random) -> tuple[str, Args]:
    nums = _numbers(rng)
    return _one_of(
        rng,
        lambda: (f"Find the median of {_fmt_list(nums)}.", {"numbers": nums}),
        lambda: (f"What's the middle value of the prices {_fmt_list(nums)}?", {"numbers": nums}),
    )


def _roi(rng: random.Random) -> tuple[str, Args]:
    initial = _money(rng, 1_000, 50_000, 250)
    final = initial + rng.randrange(-initial // 2, initial * 2, 50)
    args = {"initial_investment": initial, "final_value": final}
    return _one_of(
        rng,
        lambda: (f"I put in ${initial} and it's now worth ${final}. What's my ROI?", args),
        lambda: (f"Return on investment for {initial} invested, ending at {final}?", args),
    )


def _pct_change(rng: random.Random) -> tuple[str, Args]:
    old = round(rng.uniform(10, 500), 2)
    new = round(old * rng.uniform(0.5, 1.8), 2)
    args = {"old_value": old, "new_value": new}
    return _one_of(
        rng,
        lambda: (f"What's the percentage change from {old} to {new}?", args),
        lambda: (f"The price moved from {old} to {new}; by what percent did it change?", args),
    )


def _financials(rng: random.Random) -> tuple[str, Args]:
    symbol = rng.choice(sorted(COMPANIES))
    statement = rng.choice(["balance", "cashflow"])
    return _one_of(
        rng,
        lambda: (f"Pull the latest financial statements of {COMPANIES[symbol]} ({symbol}).",
                 {"symbol": symbol}),
        lambda: (f"Show the quarterly {statement} statement for {symbol}.",
                 {"symbol": symbol, "statement": statement, "period": "quarterly"}),
        lambda: (f"Get the annual income statement of {symbol}.",
                 {"symbol": symbol, "statement": "income", "period": "annual"}),
    )


def _portfolio(rng: random.Random) -> tuple[str, Args]:
    symbols = rng.sample(sorted(COMPANIES), rng.randint(2, 3))
    holdings = {s: rng.randint(1, 200) for s in symbols}
    text = " and ".join(f"{n} shares of {s}" for s, n in holdings.items())
    currency = rng.choice(["EUR", "GBP", "JPY"])
    return _one_of(
        rng,
        lambda: (f"What's my portfolio worth? I hold {text}.", {"holdings": holdings}),
        lambda: (f"Value my holdings of {text} in {currency}.",
                 {"holdings": holdings, "currency": currency}),
        lambda: (f"In USD, how much are {text} worth together?",
                 {"holdings": holdings, "currency": "USD"}),
    )


def _sales_tax(rng: random.Random) -> tuple[str, Args]:
    amount, rate = round(rng.uniform(5, 2_000), 2), rng.choice([5.0, 6.25, 7.5, 8.875, 10.0])
    args = {"amount": amount, "rate": rate}
    return _one_of(
        rng,
        lambda: (f"What's the sales tax on ${amount} at {rate}%?", args),
        lambda: (f"How much tax do I pay on a {amount} purchase with a {rate}% sales tax?", args),
    )


FINANCE: tuple[Function, ...] = (
    Function("get_stock_quote", "Get the latest trading price and daily change of a stock.",
             (Param("symbol", "str", "Ticker symbol, e.g. 'AAPL'."),),
             _quote),
    Function("get_historical_prices", "Fetch historical OHLC prices of a stock for a date range.",
             (Param("symbol", "str", "Ticker symbol."),
              Param("start_date", "str", "First date, YYYY-MM-DD."),
              Param("end_date", "str", "Last date, YYYY-MM-DD."),
              Param("interval", "str, optional",
                    "Bar interval: '1d', '1wk' or '1mo'. Default is '1d'.", "1d")),
             _history),
    Function("calculate_loan_payment",
             "Compute the fixed monthly payment of an amortizing loan.",
             (Param("principal", "float", "Amount borrowed."),
              Param("annual_rate", "float", "Annual interest rate in percent, e.g. 5.5 for 5.5%."),
              Param("years", "int", "Loan term in years.")),
             _loan),
    Function("compound_interest",
             "Compute the future value of an investment with compound interest.",
             (Param("principal", "float", "Initial amount invested."),
              Param("rate", "float", "Annual interest rate as a decimal, e.g. 0.05 for 5%."),
              Param("years", "int", "Number of years the money is invested."),
              Param("compounds_per_year", "int, optional",
                    "How many times per year interest is compounded. Default is 12.", 12)),
             _compound),
    Function("calculate_income_tax", "Estimate the income tax owed for a yearly income.",
             (Param("income", "float", "Gross yearly income."),
              Param("filing_status", "str, optional",
                    "'single', 'married_joint', 'married_separate' or 'head_of_household'. "
                    "Default is 'single'.", "single"),
              Param("country", "str, optional",
                    "ISO 3166 alpha-2 code of the tax country. Default is 'US'.", "US")),
             _income_tax),
    Function("convert_units",
             "Convert a value between units of mass, length, volume or temperature.",
             (Param("value", "float", "The value to convert."),
              Param("from_unit", "str", "Unit of the value, e.g. 'kilograms'."),
              Param("to_unit", "str", "Unit to convert to, e.g. 'pounds'.")),
             _units),
    Function("calculate_mean", "Arithmetic mean of a list of numbers.",
             (Param("numbers", "List[float]", "The numbers to average."),),
             _mean),
    Function("calculate_standard_deviation", "Standard deviation of a list of numbers.",
             (Param("numbers", "List[float]", "The data points."),
              Param("sample", "bool, optional",
                    "Use the sample (n-1) formula instead of the population one. Default is "
                    "True.", True)),
             _stdev),
    Function("calculate_median", "Median of a list of numbers.",
             (Param("numbers", "List[float]", "The data points."),),
             _median),
    Function("calculate_roi", "Return on investment, in percent, from start and end values.",
             (Param("initial_investment", "float", "Amount initially invested."),
              Param("final_value", "float", "Value of the investment now.")),
             _roi),
    Function("calculate_percentage_change", "Percentage change from an old value to a new one.",
             (Param("old_value", "float", "The starting value."),
              Param("new_value", "float", "The ending value.")),
             _pct_change),
    Function("get_company_financials",
             "Get a company's financial statements from its latest filings.",
             (Param("symbol", "str", "Ticker symbol."),
              Param("statement", "str, optional",
                    "'income', 'balance' or 'cashflow'. Default is 'income'.", "income"),
              Param("period", "str, optional", "'annual' or 'quarterly'. Default is 'annual'.",
                    "annual")),
             _financials),
    Function("portfolio_value", "Current market value of a stock portfolio.",
             (Param("holdings", "Dict[str, int]", "Map of ticker symbol to number of shares."),
              Param("currency", "str, optional",
                    "Currency of the result, ISO 4217. Default is 'USD'.", "USD")),
             _portfolio),
    Function("calculate_sales_tax", "Sales tax due on a purchase amount.",
             (Param("amount", "float", "Purchase amount before tax."),
              Param("rate", "float", "Sales tax rate in percent, e.g. 8.25.")),
             _sales_tax),
)

DOMAINS: dict[str, tuple[Function, ...]] = {"travel": TRAVEL, "finance": FINANCE}


# --------------------------------------------------------------------------- rows


_JOINERS = ("Also, ", "And ", "Then ")


def _lower_first(text: str) -> str:
    """Lower-case the first letter unless the first word is "I" or an acronym (e.g. "USD")."""
    first = text.split(" ", 1)[0].rstrip(",")
    return text if first == "I" or first.isupper() else text[:1].lower() + text[1:]


def _by_name(pool: tuple[Function, ...], name: str) -> Function:
    return next(f for f in pool if f.name == name)


def _make_row(rng: random.Random, pool: tuple[Function, ...],
              forced: Function | None = None) -> tuple[str, list[Function], list[Args]]:
    """(query, candidate tools, calls); ``forced`` fixes a single-call row's function."""
    if forced is None and rng.random() < PARALLEL_SHARE:
        chosen = rng.sample(pool, 2) if rng.random() < 0.7 else [rng.choice(pool)] * 2
    else:
        chosen = [forced or rng.choice(pool)]
    parts = [fn.make(rng) for fn in chosen]
    query = parts[0][0] + "".join(f" {rng.choice(_JOINERS)}{_lower_first(q)}" for q, _ in parts[1:])
    calls = [{"name": fn.name, "arguments": args} for fn, (_, args) in zip(chosen, parts)]
    right = list(dict.fromkeys(chosen))  # unique, in order
    total = rng.randint(max(2, len(right)), 5)
    others = [f for f in pool if f not in right]
    tools = right + rng.sample(others, total - len(right))
    rng.shuffle(tools)
    return query, tools, calls


def _row_line(row_id: int, query: str, tools: list[dict[str, Any]] | str,
              calls: list[Args]) -> str:
    tools_text = tools if isinstance(tools, str) else json.dumps(tools, ensure_ascii=False)
    return json.dumps({"id": row_id, "query": query,
                       "answers": json.dumps(calls, ensure_ascii=False), "tools": tools_text},
                      ensure_ascii=False)


def _bad_line(kind: str, line_no: int, rng: random.Random, pool: tuple[Function, ...],
              row_id: int) -> str:
    """One deliberately bad line (see :data:`BAD_ROWS`); ``kind`` is ``"<file>:<line>"``."""
    if kind == "travel.jsonl:13":  # tools as a Python repr
        query, tools, calls = _make_row(rng, pool, _by_name(pool, "get_time_zone"))
        return _row_line(row_id, query, str([t.spec() for t in tools]), calls)
    if kind == "travel.jsonl:58":  # the called function is not offered
        weather = _by_name(pool, "get_current_weather")
        query, _, calls = _make_row(rng, pool, weather)
        others = [f for f in pool if f is not weather]
        return _row_line(row_id, query, [f.spec() for f in rng.sample(others, 3)], calls)
    if kind == "travel.jsonl:97":  # undeclared argument
        query, tools, calls = _make_row(rng, pool, _by_name(pool, "get_current_weather"))
        calls[0]["arguments"]["country"] = "France"
        return _row_line(row_id, query, [t.spec() for t in tools], calls)
    if kind == "travel.jsonl:142":  # empty query
        _, tools, calls = _make_row(rng, pool, _by_name(pool, "search_hotels"))
        return _row_line(row_id, "", [t.spec() for t in tools], calls)
    if kind == "travel.jsonl:187":  # not JSON at all: a line cut in half
        query, tools, calls = _make_row(rng, pool, _by_name(pool, "convert_currency"))
        line = _row_line(row_id, query, [t.spec() for t in tools], calls)
        return line[: len(line) // 2]
    if kind == "finance.jsonl:21":  # truncated tools JSON
        query, tools, calls = _make_row(rng, pool, _by_name(pool, "calculate_mean"))
        return _row_line(row_id, query, json.dumps([t.spec() for t in tools])[:-7], calls)
    if kind == "finance.jsonl:64":  # misnamed function in the answer
        query, tools, calls = _make_row(rng, pool, _by_name(pool, "get_stock_quote"))
        calls[0]["name"] = "get_stock_price"
        return _row_line(row_id, query, [t.spec() for t in tools], calls)
    if kind == "finance.jsonl:110":  # undeclared argument
        query, tools, calls = _make_row(rng, pool, _by_name(pool, "calculate_loan_payment"))
        calls[0]["arguments"]["currency"] = "USD"
        return _row_line(row_id, query, [t.spec() for t in tools], calls)
    if kind == "finance.jsonl:151":  # whitespace-only query
        _, tools, calls = _make_row(rng, pool, _by_name(pool, "calculate_roi"))
        return _row_line(row_id, "   ", [t.spec() for t in tools], calls)
    if kind == "finance.jsonl:176":  # a required argument left out
        query, tools, calls = _make_row(rng, pool, _by_name(pool, "calculate_loan_payment"))
        del calls[0]["arguments"]["years"]
        return _row_line(row_id, query, [t.spec() for t in tools], calls)
    raise KeyError(f"no bad-row recipe for {kind} (line {line_no})")


def generate_lines(domain: str, seed: int = 0, rows: int = ROWS_PER_FILE) -> list[str]:
    """The JSONL lines of ``<domain>.jsonl`` (no trailing newlines)."""
    pool = DOMAINS[domain]
    file_name = f"{domain}.jsonl"
    bad = BAD_ROWS.get(file_name, {}) if rows == ROWS_PER_FILE else {}
    rng = random.Random(f"hammer-sample/{domain}/{seed}")
    lines = []
    for line_no in range(1, rows + 1):
        row_id = ID_OFFSETS[domain] + line_no
        if line_no in bad:
            lines.append(_bad_line(f"{file_name}:{line_no}", line_no, rng, pool, row_id))
        else:
            query, tools, calls = _make_row(rng, pool)
            lines.append(_row_line(row_id, query, [t.spec() for t in tools], calls))
    return lines


def generate_sample(out_dir: str | Path, seed: int = 0) -> list[Path]:
    """Write ``travel.jsonl`` and ``finance.jsonl`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    paths = []
    for domain in DOMAINS:
        path = out_dir / f"{domain}.jsonl"
        atomic_write_text(path, "\n".join(generate_lines(domain, seed)) + "\n")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print("usage: python -m hammer_core.data.sample_data OUT_DIR [SEED]", file=sys.stderr)
        return 2
    for path in generate_sample(argv[0], seed=int(argv[1]) if len(argv) == 2 else 0):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
