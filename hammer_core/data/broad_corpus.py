"""Deterministic generator of a *broad* xLAM-format corpus: many domains, hundreds of tools.

The bundled sample (:mod:`hammer_core.data.sample_data`) has two domains and 26 tools: too narrow
for a model to learn what Hammer teaches (read a tool's *description*, not its name) and too
narrow to say anything about tools never seen in training. This module writes a corpus for the
quality benchmark in the same xLAM-function-calling-60k layout and conventions as the sample:
one JSON line per row, ``{"id", "query", "tools", "answers"}``, ``tools`` and ``answers`` as
JSON *strings*, flat parameter dicts with Python-ish types (``"str"``, ``"int, optional"``,
``"List[str]"``...) and ``default`` on optional parameters that have one.

**Tools** are built compositionally: a :class:`Family` is a name template, a description
template, typed parameters (:class:`Slot`: a :class:`~hammer_core.data.sample_data.Param` plus where
its values come from) and at least three query templates (questions, imperatives, casual
requests), applied to a list of *subjects* (e.g. ``get_current_{key}`` over temperature,
humidity, UV index...), so one family gives several tools with similar names and different
purposes. The tool set does not depend on the seed: :data:`DOMAINS` maps 18 domains to
their tools (well over 300 in all), :data:`CLUSTERS` groups the domains into four task clusters
(one output file each, because the CGC-LoRA task label is per file). A tool's stable id is
``"<domain>/<name>"`` (:func:`tool_ids`); no tool name is a BFCL function name.

**Rows** (:func:`generate_cluster`): each row offers 2-6 candidate tools (the right one(s) plus
distractors, mostly from the same domain, shuffled). Exact shares per file:
:data:`PARALLEL_SHARE` rows call one function twice with different arguments,
:data:`MULTIPLE_SHARE` call two different functions of one domain, :data:`NO_CALL_SHARE` ask
something none of the listed tools can answer (``answers`` is ``"[]"``: the tools that could
answer it, those on the same subject and the ones declared as overlapping, are left out), the
rest are single calls. Argument values come from the query text (string values appear in it
verbatim); optional arguments are sometimes given, sometimes with their default value said
explicitly. Gold tools are drawn uniformly over the cluster's tools, so every tool gets rows.

**Unseen tools** (:func:`unseen_tools`): a seeded choice of ``unseen_share`` of the tools of
every domain. Rows whose gold tools are unseen go to ``<cluster>.unseen.jsonl``; the seen file
``<cluster>.jsonl`` never mentions an unseen tool, neither as gold nor as distractor (the unseen
files may offer seen tools as distractors). Train on the seen files, test on the unseen ones.
With ``unseen_share=0`` no unseen file is written. ``tools.json`` lists every tool's id, name,
domain, cluster and whether it is held out. Ingest a held-out file under its cluster's task
(``SourceSpec("everyday.unseen.jsonl", task="everyday")``, or ``task:`` in the config); by
default its task would be the file name, ``everyday.unseen``.

Usage::

    python -m hammer_core.data.broad_corpus OUT_DIR [--rows-per-cluster N] [--seed S] [--unseen-share 0.15]

prints a one-line JSON summary. Same seed, same bytes; ids are unique across all files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import string
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hammer_core.artifacts import atomic_write_text
from hammer_core.data.sample_data import (
    _JOINERS,
    _NO_DEFAULT,
    CITIES,
    COMPANIES,
    COUNTRIES,
    CURRENCIES,
    NATIONALITIES,
    Args,
    Function,
    Param,
    _date,
    _lower_first,
    _row_line,
)

PARALLEL_SHARE = 0.10  # one function called twice with different arguments
MULTIPLE_SHARE = 0.10  # two different functions
NO_CALL_SHARE = 0.08  # no listed tool fits: answers "[]"
OTHER_DOMAIN_SHARE = 0.15  # rows that also offer one distractor from another domain of the cluster
MAX_TOOLS = 6
DEFAULT_ROWS_PER_CLUSTER = 1_000
DEFAULT_UNSEEN_SHARE = 0.15
UNSEEN_ID_OFFSET = 500_000  # ids: cluster number * 1,000,000 + line (+ this in unseen files)

# --------------------------------------------------------------------------- building blocks

Sampler = Callable[[random.Random, dict[str, Any]], Any]


@dataclass(frozen=True)
class Slot:
    """One parameter of a family: its spec and where its values come from.

    ``type`` is the base xLAM type (``"str"``, ``"int"``, ``"List[str]"``...); ``optional``
    adds ``", optional"``. ``values`` is a list to choose from or ``f(rng, ctx)`` where ``ctx``
    holds the subject's fields and the values drawn so far for this call (so a destination can
    differ from its origin). ``description`` may use the subject's fields (``{label}``...)."""

    name: str
    type: str
    description: str
    values: Sequence[Any] | Sampler
    default: Any = _NO_DEFAULT
    optional: bool = False

    def draw(self, rng: random.Random, ctx: dict[str, Any]) -> Any:
        if callable(self.values):
            return self.values(rng, ctx)
        return rng.choice(self.values)

    def param(self, subject: dict[str, Any]) -> Param:
        description = self.description.format(**subject)
        if self.default is not _NO_DEFAULT and "Default" not in description:
            description += f" Default is {_default_text(self.default)}."
        type_text = f"{self.type}, optional" if self.optional or self.default is not _NO_DEFAULT \
            else self.type
        return Param(self.name, type_text, description, self.default)


#: A query template: text with ``{slot}`` and ``{subject field}`` placeholders, or
#: ``(text, fixed arguments)`` where the wording implies the arguments (``"hour by hour"``).
Template = str | tuple[str, Args]


@dataclass(frozen=True)
class Family:
    """Tools made from one pattern, one per subject (or a single tool when ``subjects`` is
    empty). ``name``/``description`` are templates over the subject's fields (``{key}``,
    ``{label}``...). ``topic`` names what a tool is about: a no-call row leaves out every tool
    sharing a topic with the question's tool; ``conflicts`` names tools that could answer the
    same questions (never offered as distractors, never offered in that tool's no-call rows)."""

    name: str
    description: str
    slots: tuple[Slot, ...]
    queries: tuple[Template, ...]
    subjects: tuple[dict[str, Any], ...] = ()
    topic: str = "{key}"
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tool:
    """A generated tool: the sample's :class:`Function` plus its domain, topics and conflicts."""

    function: Function
    domain: str
    topics: frozenset[str]
    conflicts: frozenset[str]

    @property
    def name(self) -> str:
        return self.function.name

    @property
    def id(self) -> str:
        return f"{self.domain}/{self.function.name}"


def _default_text(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def _render(value: Any) -> str:
    """How a value reads in a query: lists as "a, b and c", the rest as str()."""
    if isinstance(value, list):
        items = [str(v) for v in value]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return str(value)


def _fields(text: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(text) if f]


def _maker(family: Family, subject: dict[str, Any]) -> Callable[[random.Random], tuple[str, Args]]:
    slots = {s.name: s for s in family.slots}

    def make(rng: random.Random) -> tuple[str, Args]:
        template = rng.choice(family.queries)
        text, fixed = (template, {}) if isinstance(template, str) else template
        wanted = set(_fields(text)) & set(slots)
        ctx: dict[str, Any] = dict(subject)
        values: Args = {}
        for slot in family.slots:  # in declaration order, so samplers can see earlier values
            if slot.name in fixed:
                values[slot.name] = ctx[slot.name] = fixed[slot.name]
            elif slot.name in wanted:
                values[slot.name] = ctx[slot.name] = slot.draw(rng, ctx)
        return text.format(**{**subject, **{k: _render(v) for k, v in values.items()}}), values

    return make


def build_tools(domain: str, families: Iterable[Family]) -> tuple[Tool, ...]:
    """The tools of one domain, in family then subject order."""
    tools = []
    for family in families:
        for subject in family.subjects or ({"key": ""},):
            name = family.name.format(**subject)
            function = Function(name, family.description.format(**subject),
                                tuple(s.param(subject) for s in family.slots),
                                _maker(family, subject))
            topic = family.topic.format(**subject) or name
            tools.append(Tool(function, domain, frozenset({topic}),
                              frozenset(c.format(**subject) for c in family.conflicts)))
    return tuple(tools)


def S(key: str, label: str, **more: Any) -> dict[str, Any]:  # noqa: N802 - a short constructor
    """A family subject: ``key`` goes into tool names, ``label`` into English text."""
    return {"key": key, "label": label, **more}


def one(name: str, description: str, slots: tuple[Slot, ...], queries: tuple[Template, ...],
        topic: str | None = None, conflicts: tuple[str, ...] = ()) -> Family:
    """A family of one tool (no subjects)."""
    return Family(name, description, slots, queries, (), topic or name, conflicts)


# --------------------------------------------------------------------------- value helpers


def _iso(rng: random.Random, _ctx: dict[str, Any] | None = None) -> str:
    return _date(rng).isoformat()


def _after(field_name: str, lo: int = 1, hi: int = 14) -> Sampler:
    def draw(rng: random.Random, ctx: dict[str, Any]) -> str:
        start = dt.date.fromisoformat(ctx[field_name])
        return (start + dt.timedelta(days=rng.randint(lo, hi))).isoformat()
    return draw


def _other(field_name: str, pool: Sequence[Any]) -> Sampler:
    def draw(rng: random.Random, ctx: dict[str, Any]) -> Any:
        return rng.choice([v for v in pool if v != ctx[field_name]])
    return draw


def _from_subject(field_name: str) -> Sampler:
    return lambda rng, ctx: rng.choice(ctx[field_name])


def _ints(lo: int, hi: int, step: int = 1) -> Sampler:
    return lambda rng, ctx: rng.randrange(lo, hi + 1, step)


def _floats(lo: float, hi: float, digits: int = 1) -> Sampler:
    return lambda rng, ctx: round(rng.uniform(lo, hi), digits)


def _sample(pool: Sequence[Any], lo: int = 2, hi: int = 3) -> Sampler:
    return lambda rng, ctx: rng.sample(list(pool), rng.randint(lo, hi))


def _clock(rng: random.Random, _ctx: dict[str, Any] | None = None) -> str:
    return f"{rng.randint(6, 22):02d}:{rng.choice([0, 15, 30, 45]):02d}"


# --------------------------------------------------------------------------- value pools

PEOPLE = ["Alice", "Ben", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
          "Kofi", "Lena", "Mateo", "Nadia", "Omar", "Priya"]
MESSAGES = ["I'll be ten minutes late", "the meeting moved to 3 pm",
            "can you pick up milk on the way home", "happy birthday",
            "the report is ready for review", "call me when you land", "dinner is at 7",
            "thanks for your help today", "the keys are under the mat",
            "running behind, start without me"]
EVENT_TITLES = ["Team sync", "Dentist appointment", "Budget review", "Project kickoff",
                "Yoga class", "Parent-teacher meeting", "Quarterly planning", "Lunch with Sam",
                "Car service", "Book club"]
KEYWORDS = ["invoice", "offsite", "deadline", "birthday", "flight", "contract", "launch",
            "onboarding", "refund", "interview"]
ROOMS = ["living room", "bedroom", "kitchen", "office", "garage", "basement", "nursery",
         "hallway"]
LANGUAGES = ["Spanish", "French", "German", "Japanese", "Portuguese", "Italian", "Korean",
             "Arabic"]
MORE_COUNTRIES = COUNTRIES + ["Peru", "Norway", "Egypt", "Indonesia", "Portugal", "Argentina",
                              "New Zealand", "Morocco"]

# --------------------------------------------------------------------------- everyday: weather

_CITY = Slot("city", "str", "Name of the city, e.g. 'Lisbon'.", CITIES)
_WEATHER = (S("temperature", "temperature", what="air temperature in degrees"),
            S("humidity", "humidity", what="relative humidity in percent"),
            S("wind_speed", "wind speed", what="sustained wind speed and gusts"),
            S("uv_index", "UV index", what="ultraviolet index from 0 to 11+"),
            S("air_quality", "air quality", what="air quality index and main pollutant"),
            S("pollen_count", "pollen count", what="tree, grass and weed pollen levels"),
            S("precipitation", "chance of rain", what="probability and amount of precipitation"),
            S("visibility", "visibility", what="horizontal visibility in kilometers"),
            S("air_pressure", "air pressure", what="barometric pressure at sea level in hPa"))

WEATHER = (
    Family("get_current_{key}",
           "Get the {label} in a city right now ({what}), as measured by the nearest weather "
           "station.",
           (_CITY,),
           ("What's the {label} in {city} right now?",
            "Tell me the current {label} for {city}.",
            "{city}: what is the {label} at the moment?",
            "I'm about to head out in {city}. How's the {label} looking now?"),
           _WEATHER),
    Family("forecast_{key}",
           "Forecast the {label} ({what}) in a city for each of the coming days.",
           (_CITY, Slot("days", "int", "Number of days to forecast, from 1 to 10.",
                        [2, 3, 3, 4, 5, 7, 10], default=3)),
           ("What will the {label} be in {city} over the next {days} days?",
            "Forecast the {label} for {city}, {days} days ahead.",
            "Give me the {label} outlook for {city}.",
            "Planning a trip to {city}: predict the {label} for the coming {days} days, please."),
           _WEATHER),
    Family("get_historical_{key}",
           "Look up the {label} ({what}) recorded in a city on a past date.",
           (_CITY, Slot("date", "str", "The past date, in YYYY-MM-DD format.", _iso)),
           ("What was the {label} in {city} on {date}?",
            "Look up the recorded {label} for {city} on {date}.",
            "On {date}, how was the {label} in {city}?",
            "Pull the historical {label} in {city} for {date}."),
           _WEATHER),
)

# --------------------------------------------------------------------------- everyday: calendar

_CAL = (S("calendar_events", "calendar events", one="calendar event"),
        S("meetings", "meetings", one="meeting"),
        S("todo_items", "to-do items", one="to-do item"),
        S("reminders", "reminders", one="reminder"),
        S("alarms", "alarms", one="alarm"))
_TITLE = Slot("title", "str", "Title of the {one}, as it was saved.", EVENT_TITLES)

CALENDAR = (
    Family("list_{key}", "List all of the user's {label} scheduled for a given day.",
           (Slot("date", "str", "The day, in YYYY-MM-DD format.", _iso),),
           ("What {label} do I have on {date}?", "List my {label} for {date}.",
            "Show me all {label} on {date}, please.", "{date}: any {label}?"),
           _CAL),
    Family("delete_{key}", "Delete one of the user's {label} by its title.",
           (_TITLE,),
           ("Delete the {one} called '{title}'.", "Remove my {one} '{title}'.",
            "Please get rid of the {one} named {title}.",
            "I don't need the {title} {one} anymore, delete it."),
           _CAL),
    Family("search_{key}", "Search the user's {label} for a keyword in their title or notes.",
           (Slot("keyword", "str", "Word or phrase to look for.", KEYWORDS),
            Slot("limit", "int", "Maximum number of matches to return.", [3, 5, 10, 20],
                 default=10)),
           ("Search my {label} for '{keyword}'.", "Do I have any {label} mentioning {keyword}?",
            "Find up to {limit} {label} that contain the word {keyword}.",
            "which of my {label} say something about {keyword}?"),
           _CAL),
    one("create_calendar_event", "Add an event to the user's calendar at a date and time.",
        (Slot("title", "str", "Title of the event.", EVENT_TITLES),
         Slot("date", "str", "Date of the event, YYYY-MM-DD.", _iso),
         Slot("start_time", "str", "Start time, 24-hour HH:MM.", _clock),
         Slot("duration_minutes", "int", "Length of the event in minutes.", [30, 45, 60, 90, 120],
              default=60)),
        ("Put '{title}' on my calendar on {date} at {start_time}.",
         "Add a calendar event {title} for {date}, starting {start_time}, lasting "
         "{duration_minutes} minutes.",
         "Can you block {date} at {start_time} for {title}?"),
        topic="calendar_events", conflicts=("schedule_meeting",)),
    one("schedule_meeting", "Schedule a meeting with other people and send them invitations.",
        (Slot("title", "str", "Subject of the meeting.", EVENT_TITLES),
         Slot("attendees", "List[str]", "Names of the people to invite.", _sample(PEOPLE)),
         Slot("date", "str", "Date of the meeting, YYYY-MM-DD.", _iso),
         Slot("start_time", "str", "Start time, 24-hour HH:MM.", _clock),
         Slot("duration_minutes", "int", "Length in minutes.", [15, 30, 45, 60], default=30)),
        ("Schedule a meeting '{title}' with {attendees} on {date} at {start_time}.",
         "Set up {title} with {attendees} for {date} at {start_time}, {duration_minutes} "
         "minutes long.",
         "Invite {attendees} to a {title} meeting on {date}, {start_time}."),
        topic="meetings", conflicts=("create_calendar_event",)),
    one("add_todo_item", "Add an item to the user's to-do list, with an optional due date.",
        (Slot("task", "str", "What needs to be done.",
              ["renew passport", "file expense report", "call the plumber", "buy printer ink",
               "book flu shot", "return library books"]),
         Slot("due_date", "str", "Due date, YYYY-MM-DD.", _iso, optional=True),
         Slot("priority", "str", "'low', 'normal' or 'high'.", ["low", "normal", "high"],
              default="normal")),
        ("Add '{task}' to my to-do list.", "Put {task} on my to-do list, due {due_date}.",
         "New to-do: {task}, {priority} priority.", "remind me via my to-do list to {task} by "
         "{due_date}"),
        topic="todo_items"),
    one("set_reminder", "Create a reminder that notifies the user with a message at a date and "
        "time.",
        (Slot("message", "str", "What to be reminded of.",
              ["take the medication", "water the plants", "call grandma", "move the car",
               "submit the timesheet"]),
         Slot("date", "str", "Day of the reminder, YYYY-MM-DD.", _iso),
         Slot("time", "str", "Time of day, 24-hour HH:MM.", _clock)),
        ("Remind me to {message} on {date} at {time}.",
         "Set a reminder for {date} {time}: {message}.",
         "Can you make sure I remember to {message}? Ping me on {date} at {time}."),
        topic="reminders", conflicts=("set_alarm",)),
    one("set_alarm", "Set an alarm clock that rings at a time of day, optionally every day.",
        (Slot("time", "str", "Time of day, 24-hour HH:MM.", _clock),
         Slot("label", "str", "Name shown when the alarm rings.",
              ["Wake up", "Gym", "School run", "Meds"], optional=True),
         Slot("repeat_daily", "bool", "Ring every day instead of once.", [False], default=False)),
        ("Set an alarm for {time}.", ("Wake me up at {time} every day.", {"repeat_daily": True}),
         "Alarm at {time} labelled {label}, please.",
         ("set a one-time alarm at {time}", {"repeat_daily": False})),
        topic="alarms", conflicts=("set_reminder",)),
    one("start_focus_timer", "Start a countdown timer for a focused work session.",
        (Slot("minutes", "int", "Length of the session in minutes.", [15, 20, 25, 45, 50, 90]),
         Slot("mute_notifications", "bool", "Silence notifications while it runs.", [True],
              default=True)),
        ("Start a {minutes}-minute focus timer.", "Give me a {minutes} minute focus session.",
         ("Focus timer for {minutes} minutes, but keep my notifications on.",
          {"mute_notifications": False})),
        topic="timer"),
)

# --------------------------------------------------------------------------- everyday: messaging

_APPS = (S("slack", "Slack"), S("whatsapp", "WhatsApp"), S("telegram", "Telegram"),
         S("signal", "Signal"), S("teams", "Teams"), S("discord", "Discord"))
_CONTACT = Slot("recipient", "str", "Name of the contact.", PEOPLE)

MESSAGING = (
    Family("send_{key}_message", "Send a text message to a contact through {label}.",
           (_CONTACT, Slot("text", "str", "The message to send.", MESSAGES)),
           ("Send a {label} message to {recipient} saying '{text}'.",
            "Message {recipient} on {label}: {text}.",
            "Can you tell {recipient} over {label} that {text}?",
            "ping {recipient} on {label} with \"{text}\""),
           _APPS),
    Family("count_unread_{key}_messages", "Count the unread {label} messages, optionally only "
           "those from one contact.",
           (Slot("sender", "str", "Only count messages from this contact.", PEOPLE,
                 optional=True),),
           ("How many unread {label} messages do I have?",
            "Count my unread {label} messages from {sender}.",
            "Any unread {label} messages?", "Has {sender} sent me anything new on {label}?"),
           _APPS),
    Family("search_{key}_messages", "Search the user's {label} message history for a keyword.",
           (Slot("keyword", "str", "Word or phrase to look for.", KEYWORDS),
            Slot("limit", "int", "Maximum number of messages returned.", [5, 10, 20],
                 default=10)),
           ("Search my {label} messages for '{keyword}'.",
            "Find {label} chats that mention {keyword}.",
            "Dig up the last {limit} {label} messages about {keyword}.",
            "what did people say about {keyword} on {label}?"),
           _APPS),
    Family("block_{key}_contact", "Block a contact so their {label} messages and calls no longer "
           "reach the user.",
           (_CONTACT,),
           ("Block {recipient} on {label}.", "I don't want to hear from {recipient} on {label} "
            "anymore; block them.", "Please stop {recipient} from contacting me through {label}."),
           _APPS),
    one("send_email_message", "Send an email to one or more addresses.",
        (Slot("to", "str", "Email address of the recipient.",
              lambda rng, ctx: f"{rng.choice(PEOPLE).lower()}@example.com"),
         Slot("subject", "str", "Subject line.", ["Quarterly numbers", "Weekend plans",
                                                  "Invoice 2291", "Interview schedule"]),
         Slot("body", "str", "Text of the email.", MESSAGES),
         Slot("cc", "List[str]", "Addresses to copy.",
              lambda rng, ctx: [f"{p.lower()}@example.com" for p in rng.sample(PEOPLE, 2)],
              optional=True)),
        ("Email {to} with the subject '{subject}' and say: {body}.",
         "Send an email to {to}, subject {subject}, body '{body}', and cc {cc}.",
         "Write to {to} about '{subject}': {body}."),
        topic="email"),
    one("send_sms_text", "Send an SMS text message to a phone number.",
        (Slot("phone_number", "str", "Phone number in international format.",
              lambda rng, ctx: f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"),
         Slot("text", "str", "The message.", MESSAGES)),
        ("Text {phone_number}: {text}.", "Send an SMS to {phone_number} saying '{text}'.",
         "Can you shoot a quick text to {phone_number}? Just say {text}."),
        topic="sms"),
)

# --------------------------------------------------------------------------- everyday: smart home

_DEVICES = (S("ceiling_light", "ceiling light"), S("ceiling_fan", "ceiling fan"),
            S("space_heater", "space heater"), S("air_purifier", "air purifier"),
            S("humidifier", "humidifier"), S("dehumidifier", "dehumidifier"),
            S("smart_tv", "smart TV"))
_ROOM = Slot("room", "str", "Room the device is in, e.g. 'kitchen'.", ROOMS)

SMART_HOME = (
    Family("turn_on_{key}", "Switch on the {label} in a room of the house.", (_ROOM,),
           ("Turn on the {label} in the {room}.", "Switch the {room} {label} on.",
            "Could you power up the {label} in the {room}?", "{room} {label} on, please."),
           _DEVICES),
    Family("turn_off_{key}", "Switch off the {label} in a room of the house.", (_ROOM,),
           ("Turn off the {label} in the {room}.", "Switch the {room} {label} off.",
            "Can you shut down the {label} in the {room}?", "kill the {label} in the {room}"),
           _DEVICES),
    Family("get_{key}_status", "Report whether the {label} in a room is on, and its current "
           "setting.", (_ROOM,),
           ("Is the {label} in the {room} on?", "What's the status of the {room} {label}?",
            "Check the {label} in the {room} for me.", "did I leave the {label} in the {room} on?"),
           _DEVICES),
    one("set_light_brightness", "Dim or brighten the lights of a room to a percentage.",
        (_ROOM, Slot("brightness", "int", "Brightness in percent, 0 to 100.",
                     [10, 20, 30, 40, 50, 75, 80])),
        ("Dim the {room} lights to {brightness}%.", "Set the brightness in the {room} to "
         "{brightness} percent.", "make the {room} lights {brightness}% bright"),
        topic="ceiling_light", conflicts=("turn_on_ceiling_light", "turn_off_ceiling_light")),
    one("set_thermostat", "Set the target temperature of the home thermostat.",
        (Slot("temperature", "float", "Target temperature.", [18.5, 19.0, 20.0, 21.5, 22.0, 23.0]),
         Slot("unit", "str", "'celsius' or 'fahrenheit'.", ["celsius"], default="celsius")),
        ("Set the thermostat to {temperature} degrees.", "Change the heating target to "
         "{temperature} {unit}.", "I'm cold, can you put the thermostat on {temperature}?"),
        topic="thermostat"),
    one("lock_door", "Lock one of the smart locks of the house.",
        (Slot("door", "str", "Which door: 'front', 'back', 'garage' or 'patio'.",
              ["front", "back", "garage", "patio"]),),
        ("Lock the {door} door.", "Is the {door} door locked? Lock it.",
         "please lock up the {door} door"), topic="locks"),
    one("arm_security_system", "Arm the home alarm system in a mode.",
        (Slot("mode", "str", "'away' (all sensors) or 'home' (perimeter only).",
              ["away", "home"], default="away"),),
        ("Arm the security system.", "Arm the alarm in {mode} mode.",
         "I'm leaving, turn on the house alarm in {mode} mode."), topic="security"),
)

# --------------------------------------------------------------------------- everyday: health

_ACTIVITIES = (S("running", "running"), S("cycling", "cycling"), S("swimming", "swimming"),
               S("rowing", "rowing"), S("hiking", "hiking"), S("yoga", "yoga"),
               S("pilates", "pilates"))
_MINUTES = Slot("duration_minutes", "int", "Duration of the session in minutes.",
                [20, 25, 30, 40, 45, 60, 75, 90])
_WEIGHT = Slot("weight_kg", "float", "Body weight in kilograms.", _floats(50, 110))

HEALTH = (
    Family("log_{key}_workout", "Record a {label} session in the user's workout log.",
           (_MINUTES, Slot("date", "str", "Day of the workout, YYYY-MM-DD. Default is today.",
                           _iso, optional=True)),
           ("Log a {duration_minutes}-minute {label} workout.",
            "I just did {duration_minutes} minutes of {label}, record it.",
            "Add {duration_minutes} minutes of {label} on {date} to my workout log.",
            "put {label} in my log: {duration_minutes} min"),
           _ACTIVITIES),
    Family("estimate_{key}_calories", "Estimate the calories burned by {label} for a duration "
           "and a body weight.",
           (_MINUTES, _WEIGHT),
           ("How many calories do I burn doing {duration_minutes} minutes of {label} at "
            "{weight_kg} kg?",
            "Estimate calories for {duration_minutes} min of {label}; I weigh {weight_kg} kg.",
            "Calories burned by {label}: {duration_minutes} minutes, body weight {weight_kg} kg?"),
           _ACTIVITIES),
    one("compute_body_mass_index", "Compute the body mass index from weight and height.",
        (_WEIGHT, Slot("height_cm", "float", "Height in centimeters.", _floats(150, 200, 0))),
        ("What's my BMI if I weigh {weight_kg} kg and I'm {height_cm} cm tall?",
         "Compute the body mass index for {weight_kg} kg and {height_cm} cm.",
         "BMI for {height_cm} cm, {weight_kg} kg?"), topic="bmi"),
    one("recommend_daily_water_intake", "Recommend how much water to drink per day.",
        (_WEIGHT, Slot("activity_level", "str", "'low', 'moderate' or 'high'.",
                       ["low", "moderate", "high"], default="moderate")),
        ("How much water should I drink a day at {weight_kg} kg?",
         "Daily water intake for someone of {weight_kg} kg with a {activity_level} activity "
         "level?", "i weigh {weight_kg} kg and my activity level is {activity_level}, how many "
         "liters of water per day?"), topic="water"),
    one("get_sleep_summary", "Summarize the user's sleep (duration, stages, interruptions) for "
        "one night from their wearable.",
        (Slot("date", "str", "Night to summarize, by the date it started, YYYY-MM-DD.", _iso),),
        ("How did I sleep on the night of {date}?", "Show my sleep summary for {date}.",
         "sleep stats for {date}?"), topic="sleep"),
    one("compute_target_heart_rate", "Compute the target heart-rate zone for exercise at a given "
        "intensity.",
        (Slot("age", "int", "Age in years.", _ints(18, 75)),
         Slot("intensity_percent", "int", "Intensity as a percent of maximum heart rate.",
              [50, 60, 70, 80, 85], default=70)),
        ("What's my target heart rate at {age} years old?",
         "Target heart rate for a {age}-year-old exercising at {intensity_percent}% intensity?",
         "compute my training heart rate zone: age {age}, {intensity_percent} percent effort"),
        topic="heart_rate"),
)

# --------------------------------------------------------------------------- leisure: travel

_ORIGIN = Slot("origin_city", "str", "City of departure.", CITIES)
_DEST = Slot("destination_city", "str", "City of arrival.", _other("origin_city", CITIES))
_MODES = (S("train", "train", many="trains"), S("bus", "bus", many="buses"),
          S("ferry", "ferry", many="ferries"), S("night_train", "night train",
                                                   many="night trains"))
_STAYS = (S("hotels", "hotels"), S("hostels", "hostels"), S("vacation_rentals",
                                                            "vacation rentals"),
          S("campsites", "campsites"))
_SIGHTS = (S("museums", "museums"), S("parks", "parks"), S("beaches", "beaches"),
           S("night_markets", "night markets"), S("viewpoints", "viewpoints"),
           S("jazz_clubs", "jazz clubs"))

TRAVEL = (
    Family("search_{key}_tickets", "Search {label} tickets between two cities on a date.",
           (_ORIGIN, _DEST, Slot("date", "str", "Travel date, YYYY-MM-DD.", _iso),
            Slot("passengers", "int", "Number of travellers.", [1, 2, 3, 4], default=1)),
           ("Find {label} tickets from {origin_city} to {destination_city} on {date}.",
            "Are there any {many} from {origin_city} to {destination_city} on {date}?",
            "I need {passengers} {label} tickets {origin_city} to {destination_city} for {date}.",
            "book-search: {label}, {origin_city} -> {destination_city}, {date}, {passengers} "
            "people"),
           _MODES),
    Family("get_{key}_departures", "List the {label} departures leaving a city on a date, "
           "with times and platforms.",
           (Slot("city", "str", "City of the station or port.", CITIES),
            Slot("date", "str", "Day of departure, YYYY-MM-DD.", _iso)),
           ("Which {many} leave {city} on {date}?", "Show the {label} departure board for "
            "{city} on {date}.", "What time do {many} depart from {city} on {date}?"),
           _MODES),
    Family("search_{key}", "Find {label} in a city with availability for a stay between two "
           "dates.",
           (Slot("city", "str", "City of the stay.", CITIES),
            Slot("check_in", "str", "Arrival date, YYYY-MM-DD.", _iso),
            Slot("check_out", "str", "Departure date, YYYY-MM-DD.", _after("check_in")),
            Slot("guests", "int", "Number of guests.", [1, 2, 3, 4, 5], default=2)),
           ("Find {label} in {city} from {check_in} to {check_out}.",
            "Any {label} available in {city} between {check_in} and {check_out} for {guests} "
            "guests?",
            "We're {guests} people going to {city}, {check_in} to {check_out}; look for {label}.",
            "I need {label} in {city}, arriving {check_in}, leaving {check_out}."),
           _STAYS),
    Family("list_{key}_in_city", "List well-rated {label} in a city, best first.",
           (Slot("city", "str", "The city.", CITIES),
            Slot("limit", "int", "How many to list.", [3, 5, 8, 10], default=5)),
           ("What are the best {label} in {city}?", "List {limit} {label} worth visiting in "
            "{city}.", "Recommend some {label} in {city}.", "top {limit} {label} in {city}?"),
           _SIGHTS),
    one("get_entry_visa_rules", "Tell whether citizens of one country need a visa to enter "
        "another, and for how long they may stay.",
        (Slot("nationality", "str", "Country of citizenship.", NATIONALITIES),
         Slot("destination_country", "str", "Country to enter.", MORE_COUNTRIES)),
        ("Do citizens of {nationality} need a visa for {destination_country}?",
         "What are the entry rules for {destination_country} with a passport from "
         "{nationality}?", "I'm from {nationality}, can I travel to {destination_country} "
         "visa-free?"), topic="visa"),
    one("get_travel_advisory", "Get the government travel advisory level and safety notes for a "
        "country.",
        (Slot("country", "str", "Country to check.", MORE_COUNTRIES),),
        ("Is it safe to travel to {country} right now?", "What's the current travel advisory "
         "for {country}?", "Show me the safety warnings for {country}."), topic="advisory"),
    one("build_packing_list", "Build a packing list for a trip from the destination, its length "
        "and planned activities.",
        (Slot("destination_city", "str", "Where the trip goes.", CITIES),
         Slot("days", "int", "Length of the trip in days.", _ints(2, 21)),
         Slot("activities", "List[str]", "Planned activities.",
              _sample(["hiking", "swimming", "business meetings", "skiing", "sightseeing",
                       "camping"], 1, 3), optional=True)),
        ("What should I pack for {days} days in {destination_city}?",
         "Make me a packing list for a {days}-day trip to {destination_city} with {activities}.",
         "packing list please: {destination_city}, {days} days"), topic="packing"),
)

# --------------------------------------------------------------------------- leisure: sports

_LEAGUES = (
    S("nba", "NBA", teams=["Boston Celtics", "Denver Nuggets", "Golden State Warriors",
                           "Miami Heat", "Los Angeles Lakers", "Milwaukee Bucks"],
      players=["Nikola Jokic", "Jayson Tatum", "Stephen Curry", "Giannis Antetokounmpo",
               "Luka Doncic"]),
    S("nfl", "NFL", teams=["Kansas City Chiefs", "San Francisco 49ers", "Buffalo Bills",
                           "Dallas Cowboys", "Philadelphia Eagles", "Detroit Lions"],
      players=["Patrick Mahomes", "Josh Allen", "Christian McCaffrey", "Travis Kelce",
               "Lamar Jackson"]),
    S("nhl", "NHL", teams=["Edmonton Oilers", "Florida Panthers", "Toronto Maple Leafs",
                           "Boston Bruins", "Colorado Avalanche"],
      players=["Connor McDavid", "Auston Matthews", "Nathan MacKinnon", "Leon Draisaitl"]),
    S("mlb", "MLB", teams=["New York Yankees", "Los Angeles Dodgers", "Houston Astros",
                           "Atlanta Braves", "Chicago Cubs"],
      players=["Shohei Ohtani", "Aaron Judge", "Mookie Betts", "Juan Soto"]),
    S("premier_league", "Premier League",
      teams=["Arsenal", "Manchester City", "Liverpool", "Chelsea", "Tottenham Hotspur",
             "Aston Villa"],
      players=["Erling Haaland", "Mohamed Salah", "Bukayo Saka", "Cole Palmer"]),
    S("la_liga", "La Liga", teams=["Real Madrid", "Barcelona", "Atletico Madrid",
                                   "Real Sociedad", "Sevilla"],
      players=["Kylian Mbappe", "Robert Lewandowski", "Antoine Griezmann", "Vinicius Junior"]),
)
_SEASON = Slot("season", "int", "Season, by the year it started, e.g. 2023.",
               [2019, 2020, 2021, 2022, 2023, 2024], default=2024)

SPORTS = (
    Family("get_{key}_standings", "Get the {label} league table: wins, losses and rank of every "
           "team for a season.",
           (_SEASON,),
           ("Show me the current {label} standings.", "What did the {label} table look like "
            "in the {season} season?", "Which team is leading the {label} right now?",
            "{label} standings for {season}, please."),
           _LEAGUES),
    Family("get_{key}_team_schedule", "List the upcoming games of one {label} team, with "
           "opponents, dates and venues.",
           (Slot("team", "str", "Full team name, e.g. '{teams[0]}'.", _from_subject("teams")),
            Slot("games", "int", "How many upcoming games to list.", [3, 5, 10], default=5)),
           ("When is the next {team} game?", "Show the next {games} games on the {team} "
            "schedule.", "What's coming up on the {team} schedule?", "Show me the opponents {team} "
            "will face in the next {games} {label} games."),
           _LEAGUES),
    Family("get_{key}_player_season_stats", "Get a {label} player's statistics for a season.",
           (Slot("player", "str", "Player's full name.", _from_subject("players")), _SEASON),
           ("How is {player} doing this season?", "Get {player}'s {label} stats for {season}.",
            "Show me {player}'s numbers from the {season} season.",
            "{player} stats?"),
           _LEAGUES),
    Family("get_{key}_scoring_leaders", "Rank the top scorers of the {label} for a season.",
           (Slot("limit", "int", "How many players to rank.", [3, 5, 10, 20], default=10),
            _SEASON),
           ("Who are the top scorers in the {label}?", "List the {limit} leading scorers of the "
            "{label} in {season}.", "{label} scoring leaders for {season}?",
            "Give me the top {limit} {label} scorers."),
           _LEAGUES),
)

# --------------------------------------------------------------------------- leisure: music

ARTISTS = ["Taylor Swift", "Kendrick Lamar", "Adele", "Radiohead", "Bad Bunny", "Billie Eilish",
           "Coldplay", "Beyonce", "Daft Punk", "Miles Davis", "Fleetwood Mac", "Dua Lipa"]
SONGS = {"Bohemian Rhapsody": "Queen", "Blinding Lights": "The Weeknd", "Hey Jude": "The Beatles",
         "Rolling in the Deep": "Adele", "Billie Jean": "Michael Jackson",
         "Levitating": "Dua Lipa", "Yellow": "Coldplay", "Dreams": "Fleetwood Mac",
         "Get Lucky": "Daft Punk", "So What": "Miles Davis"}
MUSIC_GENRES = ["jazz", "hip hop", "indie rock", "classical", "reggaeton", "country",
                "electronic", "k-pop"]
_ARTIST = Slot("artist", "str", "Name of the artist or band.", ARTISTS)
_SONG = Slot("title", "str", "Title of the song.", sorted(SONGS))
_SONG_ARTIST = Slot("artist", "str", "Artist of the song.", lambda rng, ctx: SONGS[ctx["title"]])

MUSIC = (
    Family("get_artist_{key}", "Get the {label} of a music artist.",
           (_ARTIST,),
           ("Can you pull up the {label} of {artist}?", "Look up {artist}'s {label}.",
            "I'm curious about {artist}: show me their {label}.", "{artist} {label}, please."),
           (S("top_tracks", "most-streamed tracks"), S("discography", "full discography"),
            S("upcoming_concerts", "upcoming concert dates"),
            S("similar_artists", "similar artists"), S("award_history", "awards and nominations"),
            S("monthly_listeners", "monthly listener numbers"))),
    Family("get_track_{key}", "Get the {label} of a song, identified by its title and artist.",
           (_SONG, _SONG_ARTIST),
           ("Get me the {label} of {title} by {artist}.", "Show me the {label} for "
            "'{title}' by {artist}.", "{title} ({artist}): {label}, please.",
            "I need the {label} of {artist}'s {title}."),
           (S("lyrics", "lyrics"), S("chords", "guitar chords"),
            S("credits", "songwriting and production credits"),
            S("tempo", "tempo and time signature"), S("key", "musical key and scale"))),
    one("create_playlist", "Create a new playlist in the user's library from a list of songs.",
        (Slot("name", "str", "Name of the playlist.", ["Road Trip", "Focus", "Sunday Morning",
                                                        "Workout Mix", "Rainy Days"]),
         Slot("songs", "List[str]", "Song titles to put in it.", _sample(sorted(SONGS), 2, 4)),
         Slot("public", "bool", "Whether other users can see it.", [False], default=False)),
        ("Make a playlist called {name} with {songs}.",
         ("Create a public playlist '{name}' containing {songs}.", {"public": True}),
         "new playlist {name}: {songs}"), topic="playlist"),
    one("play_song", "Start playing a song on the user's current device.",
        (_SONG, Slot("artist", "str", "Artist, to tell apart songs with the same title.",
                     lambda rng, ctx: SONGS[ctx["title"]], optional=True)),
        ("Play {title}.", "Put on {title} by {artist}.", "Can you play '{title}' for me?"),
        topic="playback"),
    one("get_genre_chart", "Get the current top songs of a music genre in a country.",
        (Slot("genre", "str", "Music genre.", MUSIC_GENRES),
         Slot("country", "str", "Country of the chart, ISO 3166 alpha-2.",
              ["US", "GB", "DE", "JP", "BR", "FR"], default="US")),
        ("What's topping the {genre} charts?", "Show the {genre} chart for {country}.",
         "Top {genre} songs in {country} right now?"), topic="charts"),
)

# --------------------------------------------------------------------------- leisure: movies

MOVIES = ["Inception", "Parasite", "The Godfather", "Spirited Away", "Oppenheimer",
          "Mad Max: Fury Road", "Get Out", "Amelie", "The Matrix", "Coco", "Arrival", "Whiplash"]
TV_SHOWS = ["Breaking Bad", "The Office", "Succession", "Stranger Things", "The Crown",
            "Severance", "Fleabag", "Dark"]
ACTORS = ["Meryl Streep", "Denzel Washington", "Cate Blanchett", "Song Kang-ho",
          "Tilda Swinton", "Keanu Reeves", "Viola Davis", "Mahershala Ali"]
FILM_GENRES = ["comedy", "horror", "science fiction", "documentary", "animation", "thriller",
               "romance", "western"]
_MOVIE = Slot("title", "str", "Title of the film.", MOVIES)

MOVIES_TV = (
    Family("get_movie_{key}", "Get the {label} of a film, looked up by its title.", (_MOVIE,),
           ("What's the {label} of {title}?", "Tell me the {label} for the movie {title}.",
            "Look up the {label} of '{title}'.", "{title}: {label}?"),
           (S("cast", "main cast"), S("director", "director"), S("runtime", "running time"),
            S("box_office", "worldwide box office gross"), S("release_date", "release date"),
            S("plot_summary", "plot summary"), S("awards", "awards record"),
            S("streaming_services", "list of streaming services"))),
    Family("get_tv_show_{key}", "Get the {label} of a TV series.",
           (Slot("show", "str", "Title of the series.", TV_SHOWS),),
           ("What's the {label} of {show}?", "Look up the {label} for {show}.",
            "Tell me about {show}: I want the {label}.", "{show} {label}?"),
           (S("cast", "main cast"), S("season_count", "number of seasons"),
            S("rating", "average audience rating"))),
    one("list_tv_episodes", "List the episodes of one season of a TV series, with titles and air "
        "dates.",
        (Slot("show", "str", "Title of the series.", TV_SHOWS),
         Slot("season", "int", "Season number.", _ints(1, 4))),
        ("List the episodes of {show} season {season}.", "What episodes are in season {season} "
         "of {show}?", "{show} s{season} episode list"), topic="episodes"),
    one("find_cinema_showtimes", "Find cinema showtimes of a film in a city on a date.",
        (_MOVIE, Slot("city", "str", "City to search.", CITIES),
         Slot("date", "str", "Day, YYYY-MM-DD.", _iso)),
        ("Where is {title} playing in {city} on {date}?", "Showtimes for {title} in {city} on "
         "{date}, please.", "I want to catch {title} in {city} on {date}; when can I go?"),
        topic="showtimes"),
    one("recommend_movies", "Recommend films of a genre, optionally above a minimum rating.",
        (Slot("genre", "str", "Film genre.", FILM_GENRES),
         Slot("min_rating", "float", "Lowest average rating out of 10.", [6.5, 7.0, 7.5, 8.0],
              optional=True),
         Slot("limit", "int", "How many films.", [3, 5, 10], default=5)),
        ("Recommend some {genre} movies.", "Suggest {limit} {genre} films rated at least "
         "{min_rating}.", "what's a good {genre} to watch tonight?"), topic="recommendations"),
    one("search_movies_by_actor", "List the films an actor has appeared in, newest first.",
        (Slot("actor", "str", "Actor's full name.", ACTORS),),
        ("What movies has {actor} been in?", "List the filmography of {actor}.",
         "films with {actor}?"), topic="filmography"),
)

# --------------------------------------------------------------------------- leisure: cooking

INGREDIENTS = ["chickpeas", "salmon", "spinach", "tofu", "chicken thighs", "lentils",
               "mushrooms", "eggplant", "sweet potatoes", "shrimp", "quinoa",
               "butternut squash"]
DISHES = ["lasagna", "pad thai", "chicken curry", "banana bread", "shakshuka", "ramen",
          "paella", "chili con carne"]
DIETS = ["vegetarian", "vegan", "keto", "gluten-free", "pescatarian", "Mediterranean"]
_INGREDIENT = Slot("ingredient", "str", "The ingredient.", INGREDIENTS)

COOKING = (
    Family("search_{key}_recipes", "Find {label} recipes that use a given ingredient, "
           "optionally under a time limit.",
           (_INGREDIENT, Slot("max_minutes", "int", "Longest total cooking time in minutes.",
                              [20, 30, 45, 60], optional=True)),
           ("Find me {label} recipes with {ingredient}.", "What {label} dishes can I make with "
            "{ingredient} in under {max_minutes} minutes?", "{label} recipes using {ingredient}?",
            "I have {ingredient} at home; any {label} ideas?"),
           (S("italian", "Italian"), S("japanese", "Japanese"), S("mexican", "Mexican"),
            S("indian", "Indian"), S("thai", "Thai"), S("french", "French"),
            S("greek", "Greek"), S("korean", "Korean"))),
    Family("get_ingredient_{key}", "Get the {label} content of an amount of an ingredient.",
           (_INGREDIENT, Slot("grams", "int", "Amount in grams.", [50, 100, 150, 200, 250],
                              default=100)),
           ("How much {label} is in {grams} g of {ingredient}?", "What's the {label} content "
            "of {ingredient}?", "Look up the {label} in {grams} grams of {ingredient}.",
            "{ingredient} {label} per {grams} g?"),
           (S("calories", "calorie"), S("protein", "protein"), S("fiber", "fiber"),
            S("sugar", "sugar"), S("sodium", "sodium"))),
    one("scale_recipe", "Rescale the ingredient quantities of a recipe to a number of servings.",
        (Slot("dish", "str", "Name of the recipe.", DISHES),
         Slot("servings", "int", "Servings wanted.", _ints(2, 12))),
        ("Scale my {dish} recipe to {servings} servings.", "I'm cooking {dish} for {servings} "
         "people, adjust the quantities.", "{dish} for {servings}: how much of everything?"),
        topic="scaling"),
    one("suggest_ingredient_substitute", "Suggest substitutes for an ingredient the user does "
        "not have, optionally respecting a diet.",
        (_INGREDIENT, Slot("diet", "str", "Diet the substitute must fit.", DIETS,
                           optional=True)),
        ("What can I use instead of {ingredient}?", "Suggest a {diet} substitute for "
         "{ingredient}.", "out of {ingredient}, what else works?"), topic="substitutes"),
    one("plan_weekly_menu", "Plan dinners for several days that fit a diet.",
        (Slot("diet", "str", "Diet to follow.", DIETS),
         Slot("days", "int", "Number of days to plan.", [3, 5, 7], default=7)),
        ("Plan a {diet} dinner menu for the week.", "Make me a {days}-day {diet} meal plan.",
         "I'm going {diet}: plan {days} days of dinners."), topic="menu"),
    one("build_shopping_list", "Merge the ingredients of several recipes into one shopping list.",
        (Slot("dishes", "List[str]", "Recipes to shop for.", _sample(DISHES)),),
        ("Make a shopping list for {dishes}.", "What do I need to buy to cook {dishes}?",
         "grocery list for {dishes} please"), topic="shopping_list"),
)

# --------------------------------------------------------------------------- money: markets

CRYPTO = ["bitcoin", "ethereum", "solana", "cardano", "dogecoin", "litecoin"]
_SYMBOL = Slot("symbol", "str", "Stock ticker symbol, e.g. 'MSFT'.", sorted(COMPANIES))

MARKETS = (
    Family("get_stock_{key}", "Get the {label} of a listed company's stock.",
           (_SYMBOL,),
           ("What's the {label} of {symbol}?", "Look up the {label} for {symbol} stock.",
            "Check {symbol}: I need its {label}.", "{symbol} {label}?"),
           (S("dividend_yield", "dividend yield"), S("pe_ratio", "price-to-earnings ratio"),
            S("market_cap", "market capitalization"), S("beta", "beta coefficient"),
            S("analyst_rating", "consensus analyst rating"),
            S("earnings_date", "next earnings date"), S("short_interest", "short interest"))),
    Family("get_crypto_{key}", "Get the {label} of a cryptocurrency, in a fiat currency.",
           (Slot("coin", "str", "Name of the coin, e.g. 'bitcoin'.", CRYPTO),
            Slot("currency", "str", "ISO 4217 code of the fiat currency.", ["USD", "EUR", "GBP"],
                 default="USD")),
           ("What's the {label} of {coin}?", "Show me {coin}'s {label} in {currency}.",
            "{coin} {label} in {currency}?", "How about {coin}, what's its {label} today?"),
           (S("price", "current price"), S("market_cap", "market capitalization"),
            S("trading_volume", "24-hour trading volume"),
            S("all_time_high", "all-time high price"))),
    one("estimate_mortgage_payment", "Estimate the monthly payment of a fixed-rate mortgage.",
        (Slot("principal", "float", "Amount borrowed.", _ints(100_000, 900_000, 5_000)),
         Slot("annual_rate", "float", "Annual interest rate in percent.",
              [3.5, 4.25, 5.0, 5.75, 6.1, 6.5, 7.2]),
         Slot("years", "int", "Term in years.", [15, 20, 25, 30], default=30)),
        ("What would my monthly mortgage payment be on {principal} at {annual_rate}% over "
         "{years} years?", "Estimate the mortgage payment for a {principal} loan at "
         "{annual_rate} percent.", "mortgage calc: {principal} borrowed, {annual_rate}%, "
         "{years} yrs"), topic="mortgage"),
    one("project_savings_growth", "Project the balance of regular monthly savings with interest "
        "after some years.",
        (Slot("monthly_deposit", "float", "Amount saved each month.", [100, 250, 400, 500,
                                                                       1000]),
         Slot("annual_rate", "float", "Expected annual return in percent.", [2.0, 3.5, 5.0, 7.0]),
         Slot("years", "int", "Number of years.", _ints(5, 40))),
        ("If I save {monthly_deposit} a month at {annual_rate}% for {years} years, how much "
         "will I have?", "Project my savings: {monthly_deposit} monthly, {annual_rate} percent "
         "return, {years} years.", "How big does a {monthly_deposit}/month savings plan get "
         "after {years} years at {annual_rate}%?"), topic="savings"),
    one("compute_break_even_units", "Compute how many units must be sold to cover fixed costs.",
        (Slot("fixed_costs", "float", "Total fixed costs.", _ints(5_000, 200_000, 500)),
         Slot("unit_price", "float", "Selling price per unit.", _floats(5, 200, 2)),
         Slot("unit_cost", "float", "Variable cost per unit.",
              lambda rng, ctx: round(ctx["unit_price"] * rng.uniform(0.2, 0.8), 2))),
        ("How many units do I need to sell to break even with fixed costs of {fixed_costs}, a "
         "price of {unit_price} and a unit cost of {unit_cost}?",
         "Break-even point: fixed costs {fixed_costs}, price {unit_price}, variable cost "
         "{unit_cost}.", "compute break-even units for {fixed_costs} fixed, {unit_price} "
         "price, {unit_cost} cost per unit"), topic="break_even"),
    one("get_exchange_rate_history", "Get daily exchange rates between two currencies over a "
        "date range.",
        (Slot("base", "str", "ISO 4217 code of the base currency.", CURRENCIES),
         Slot("quote", "str", "ISO 4217 code of the quote currency.", _other("base", CURRENCIES)),
         Slot("start_date", "str", "First day, YYYY-MM-DD.", _iso),
         Slot("end_date", "str", "Last day, YYYY-MM-DD.", _after("start_date", 7, 60))),
        ("How did {base} to {quote} move between {start_date} and {end_date}?",
         "Show the {base}/{quote} exchange rate history from {start_date} to {end_date}.",
         "daily {base} {quote} rates {start_date} through {end_date}"), topic="fx_history"),
)

# --------------------------------------------------------------------------- money: banking

_ACCOUNTS = (S("checking", "checking account"), S("savings", "savings account"),
             S("credit_card", "credit card"))
BANKING = (
    Family("get_{key}_balance", "Get the current balance of the user's {label}.", (),
           ("What's my {label} balance?", "How much money is on my {label} right now?",
            "Check the balance on my {label}.", "{label} balance pls"),
           _ACCOUNTS),
    Family("list_{key}_transactions", "List recent transactions on the user's {label}, newest "
           "first.",
           (Slot("limit", "int", "How many transactions.", [5, 10, 20, 50], default=10),
            Slot("since", "str", "Only transactions on or after this date, YYYY-MM-DD.", _iso,
                 optional=True)),
           ("Show my recent {label} transactions.", "List the last {limit} transactions on my "
            "{label}.", "What went through my {label} since {since}?",
            "I want to see {limit} recent {label} purchases and payments."),
           _ACCOUNTS),
    Family("download_{key}_statement", "Download the monthly statement of the user's {label} as "
           "a PDF.",
           (Slot("month", "str", "Statement month, YYYY-MM.",
                 lambda rng, ctx: f"2025-{rng.randint(1, 12):02d}"),),
           ("Download my {label} statement for {month}.", "I need the {month} statement of my "
            "{label}.", "Can you get me the {label} statement from {month}?"),
           _ACCOUNTS),
    one("transfer_between_accounts", "Move money between two of the user's own accounts.",
        (Slot("from_account", "str", "'checking' or 'savings'.", ["checking", "savings"]),
         Slot("to_account", "str", "'checking' or 'savings'.",
              _other("from_account", ["checking", "savings"])),
         Slot("amount", "float", "Amount to move.", _ints(50, 5000, 50))),
        ("Move {amount} from {from_account} to {to_account}.", "Transfer {amount} dollars from "
         "my {from_account} into my {to_account}.", "put {amount} from {from_account} over to "
         "{to_account}"), topic="transfer"),
    one("pay_bill", "Pay a bill to a registered payee on a date.",
        (Slot("payee", "str", "Name of the payee.", ["City Power", "Metro Water", "Comcast",
                                                     "State Farm", "Verizon",
                                                     "Riverside Apartments"]),
         Slot("amount", "float", "Amount to pay.", _floats(20, 2500, 2)),
         Slot("date", "str", "Payment date, YYYY-MM-DD. Default is today.", _iso,
              optional=True)),
        ("Pay {amount} to {payee}.", "Schedule a payment of {amount} to {payee} on {date}.",
         "I owe {payee} {amount}, pay it on {date}."), topic="bills"),
    one("freeze_card", "Temporarily freeze a payment card so no new charges go through.",
        (Slot("last_four", "str", "Last four digits of the card.",
              lambda rng, ctx: f"{rng.randint(0, 9999):04d}"),),
        ("Freeze my card ending in {last_four}.", "I lost the card ending {last_four}, block "
         "new charges.", "Please put a freeze on card {last_four}."), topic="card_freeze"),
    one("set_spending_alert", "Alert the user when monthly spending in a category passes a "
        "limit.",
        (Slot("category", "str", "Spending category.", ["dining", "groceries", "travel",
                                                        "entertainment", "fuel"]),
         Slot("monthly_limit", "float", "Limit per month.", _ints(100, 1500, 50))),
        ("Alert me if I spend more than {monthly_limit} on {category} this month.",
         "Set a {category} spending alert at {monthly_limit} a month.",
         "warn me when {category} goes over {monthly_limit}"), topic="alerts"),
)

# --------------------------------------------------------------------------- money: shopping

_DEPTS = (S("electronics", "electronics", items=["noise-cancelling headphones", "4K monitor",
                                                 "mechanical keyboard", "USB-C charger"]),
          S("books", "books", items=["science fiction novels", "cookbooks",
                                     "Python programming", "graphic novels"]),
          S("clothing", "clothing", items=["rain jacket", "running shoes", "wool sweater",
                                           "linen shirt"]),
          S("grocery", "grocery", items=["olive oil", "coffee beans", "oat milk",
                                         "basmati rice"]),
          S("furniture", "furniture", items=["standing desk", "bookshelf", "office chair",
                                             "sofa bed"]),
          S("toys", "toys", items=["building blocks", "jigsaw puzzle", "board game",
                                   "remote control car"]),
          S("beauty", "beauty", items=["sunscreen", "face serum", "shampoo", "lip balm"]))
_ORDER = Slot("order_id", "str", "Order number, e.g. 'ORD-123456'.",
              lambda rng, ctx: f"ORD-{rng.randint(100000, 999999)}")

SHOPPING = (
    Family("search_{key}_catalog", "Search the {label} department of the online store for "
           "products matching a keyword.",
           (Slot("keyword", "str", "What to look for.", _from_subject("items")),
            Slot("max_price", "float", "Highest price to show.", [25, 50, 100, 200, 500],
                 optional=True),
            Slot("sort_by", "str", "'relevance', 'price' or 'rating'.",
                 ["relevance", "price", "rating"], default="relevance")),
           ("Search the {label} section for {keyword}.", "Find {keyword} priced under {max_price} "
            "in the {label} section.", "Show me results for {keyword} in the {label} department, sorted by {sort_by}.",
            "looking for {keyword} ({label})"),
           _DEPTS),
    Family("get_{key}_deals", "List today's discounted products in the {label} department.",
           (Slot("limit", "int", "How many deals.", [5, 10, 20], default=10),),
           ("What {label} deals are on today?", "Show me {limit} discounted {label} products.",
            "Any sales in {label} right now?", "today's {label} bargains, top {limit}"),
           _DEPTS),
    one("track_order", "Get the shipping status and expected delivery of an order.",
        (_ORDER,),
        ("Where is my order {order_id}?", "Track order {order_id}.",
         "When will {order_id} arrive?"), topic="order_status"),
    one("cancel_order", "Cancel an order that has not shipped yet.",
        (_ORDER, Slot("reason", "str", "Why it is cancelled.",
                      ["ordered by mistake", "found a better price", "arrives too late"],
                      optional=True)),
        ("Cancel order {order_id}.", "Please cancel {order_id}, I {reason}.",
         "I want to call off order {order_id}: {reason}."), topic="order_cancel"),
    one("start_return", "Start a return for an item of a delivered order.",
        (_ORDER, Slot("item", "str", "The item to send back.",
                      ["headphones", "jacket", "desk lamp", "blender"]),
         Slot("reason", "str", "Why it is returned.", ["damaged", "wrong size",
                                                       "not as described"])),
        ("I want to return the {item} from order {order_id}, it's {reason}.",
         "Start a return for {item} in {order_id}; reason: {reason}.",
         "The {item} from {order_id} arrived {reason}. Send it back."), topic="returns"),
    one("apply_coupon_code", "Apply a discount code to the items in the user's cart.",
        (Slot("code", "str", "The coupon code.", ["SPRING20", "WELCOME10", "FREESHIP",
                                                  "SAVE15"]),),
        ("Apply the coupon {code}.", "Use discount code {code} on my cart.",
         "I have a promo code, {code}, can you add it?"), topic="coupons"),
    one("compare_store_prices", "Compare the price of a product across several stores.",
        (Slot("product", "str", "The product.", ["AirPods Pro", "Kindle Paperwhite",
                                                 "Nintendo Switch", "Dyson V15"]),
         Slot("stores", "List[str]", "Stores to compare.",
              _sample(["Amazon", "Walmart", "Target", "Best Buy", "Costco"]))),
        ("Compare the price of the {product} at {stores}.", "Where is the {product} cheapest: "
         "{stores}?", "{product} prices at {stores}, please."), topic="price_compare"),
)

# --------------------------------------------------------------------------- money: jobs

_FIELDS = (S("software", "software engineering", titles=["backend engineer", "frontend developer",
                                                         "site reliability engineer"]),
           S("nursing", "nursing", titles=["registered nurse", "critical care nurse", "nurse practitioner"]),
           S("teaching", "teaching", titles=["math teacher", "kindergarten teacher",
                                             "language teacher"]),
           S("data_science", "data science", titles=["data analyst", "machine learning engineer",
                                                     "data scientist"]),
           S("marketing", "marketing", titles=["content marketer", "search marketing specialist",
                                               "brand manager"]),
           S("accounting", "accounting", titles=["staff accountant", "tax auditor",
                                                 "payroll specialist"]))
EMPLOYERS = ["Acme Corp", "Globex", "Initech", "Umbrella Health", "Stark Industries",
             "Wayne Enterprises"]
JOBS = (
    Family("search_{key}_jobs", "Search open {label} positions in a city.",
           (Slot("city", "str", "City of the job.", CITIES),
            Slot("remote_ok", "bool", "Include remote positions.", [False], default=False),
            Slot("min_salary", "int", "Lowest yearly salary in USD.",
                 [50000, 70000, 90000, 120000], optional=True)),
           ("Find {label} jobs in {city}.", "Any {label} openings in {city} paying at least "
            "{min_salary}?", ("Show {label} jobs in {city}, remote ones included.",
                              {"remote_ok": True}), "I'm looking for work in {label} around "
            "{city}."),
           _FIELDS),
    Family("estimate_{key}_salary", "Estimate the typical salary of a {label} role in a city.",
           (Slot("job_title", "str", "Job title.", _from_subject("titles")),
            Slot("city", "str", "City.", CITIES),
            Slot("years_experience", "int", "Years of experience.", [0, 2, 5, 10], default=2)),
           ("What does a {job_title} earn in {city}?", "Estimate the salary for a {job_title} "
            "in {city} with {years_experience} years of experience.",
            "{job_title} pay in {city}?", "How much should I ask for as a {job_title} in "
            "{city}?"),
           _FIELDS),
    one("get_employer_reviews", "Get employee reviews and ratings of a company as an employer.",
        (Slot("company", "str", "Company name.", EMPLOYERS),
         Slot("limit", "int", "How many reviews.", [3, 5, 10], default=5)),
        ("What do employees say about working at {company}?", "Show {limit} employee reviews of "
         "{company}.", "is {company} a good place to work?"), topic="employer_reviews"),
    one("list_job_skills", "List the skills employers most often ask for in a job title.",
        (Slot("job_title", "str", "Job title.", ["product manager", "UX designer",
                                                 "licensed electrician", "paralegal", "data engineer"]),),
        ("What skills do I need to become a {job_title}?", "List the top skills for a "
         "{job_title}.", "{job_title}: what do employers look for?"), topic="skills"),
)

# --------------------------------------------------------------------------- science: geography

_COUNTRY = Slot("country", "str", "Name of the country.", MORE_COUNTRIES)
GEOGRAPHY = (
    Family("get_country_{key}", "Get the {label} of a country from a world factbook.", (_COUNTRY,),
           ("I need to know the {label} of {country}.", "Tell me the {label} of {country}.",
            "Look up {country}'s {label}.", "{country}: {label}?"),
           (S("capital", "capital city"), S("population", "population"),
            S("official_languages", "official languages"), S("currency", "official currency"),
            S("land_area", "land area"),
            S("highest_point", "highest point"), S("neighbors", "bordering countries"),
            S("calling_code", "international calling code"))),
    Family("get_city_{key}", "Get the {label} of a city.",
           (Slot("city", "str", "Name of the city.", CITIES),),
           ("What's the {label} of {city}?", "Look up the {label} for {city}.",
            "I need {city}'s {label}.", "{city} {label}?"),
           (S("population", "population"), S("elevation", "elevation above sea level"),
            S("coordinates", "latitude and longitude"), S("local_time", "current local time"))),
    one("measure_city_distance", "Great-circle distance between two cities.",
        (Slot("city_a", "str", "First city.", CITIES),
         Slot("city_b", "str", "Second city.", _other("city_a", CITIES)),
         Slot("unit", "str", "'km' or 'miles'.", ["km", "miles"], default="km")),
        ("How far is {city_a} from {city_b}?", "Distance between {city_a} and {city_b} in "
         "{unit}?", "As the crow flies, how many {unit} from {city_a} to {city_b}?"),
        topic="distance"),
    one("list_country_rivers", "List the longest rivers flowing through a country.",
        (_COUNTRY, Slot("limit", "int", "How many rivers.", [3, 5, 10], default=5)),
        ("What are the main rivers of {country}?", "List the {limit} longest rivers in "
         "{country}.", "rivers in {country}?"), topic="rivers"),
    one("find_country_by_capital", "Find which country a capital city belongs to.",
        (Slot("capital", "str", "Name of the capital.", ["Canberra", "Ottawa", "Nairobi",
                                                         "Lima", "Oslo", "Hanoi", "Rabat"]),),
        ("Which country has {capital} as its capital?", "{capital} is the capital of what "
         "country?", "Find the country whose capital is {capital}."), topic="capital_lookup"),
)

# --------------------------------------------------------------------------- science: math

def _numbers(rng: random.Random, _ctx: dict[str, Any]) -> list[float]:
    n = rng.randint(4, 7)
    if rng.random() < 0.5:
        return [rng.randint(1, 99) for _ in range(n)]
    return [round(rng.uniform(1, 100), 1) for _ in range(n)]


MATH = (
    Family("compute_list_{key}", "Compute the {label} of a list of numbers.",
           (Slot("numbers", "List[float]", "The numbers.", _numbers),),
           ("What's the {label} of {numbers}?", "Compute the {label} of these values: "
            "{numbers}.", "I have {numbers}. What's their {label}?",
            "{label} of {numbers}, please."),
           (S("arithmetic_mean", "arithmetic mean"), S("median", "median"), S("mode", "mode"),
            S("range", "range"), S("variance", "sample variance"),
            S("geometric_mean", "geometric mean"), S("harmonic_mean", "harmonic mean"),
            S("sum_of_squares", "sum of squares"))),
    one("check_prime", "Tell whether a whole number is prime.",
        (Slot("n", "int", "The number to test.", _ints(2, 10_000)),),
        ("Is {n} a prime number?", "Check whether {n} is prime.", "{n} prime or not?"),
        topic="primes"),
    one("factorize_integer", "Break a whole number into its prime factors.",
        (Slot("n", "int", "The number to factor.", _ints(4, 100_000)),),
        ("What are the prime factors of {n}?", "Factorize {n}.", "Break {n} down into primes."),
        topic="factors"),
    one("greatest_common_divisor_of", "Greatest common divisor of two whole numbers.",
        (Slot("a", "int", "First number.", _ints(6, 5000)),
         Slot("b", "int", "Second number.", _ints(6, 5000))),
        ("What's the greatest common divisor of {a} and {b}?", "GCD of {a} and {b}?",
         "Find the largest number that divides both {a} and {b}."), topic="gcd"),
    one("least_common_multiple_of", "Least common multiple of two whole numbers.",
        (Slot("a", "int", "First number.", _ints(2, 500)),
         Slot("b", "int", "Second number.", _ints(2, 500))),
        ("What's the least common multiple of {a} and {b}?", "LCM of {a} and {b}?",
         "Find the smallest number that both {a} and {b} divide."), topic="lcm"),
    one("percent_of_value", "Compute a percentage of a value.",
        (Slot("percent", "float", "The percentage, e.g. 15 for 15%.", [5, 12.5, 15, 18, 20, 35]),
         Slot("value", "float", "The value.", _floats(10, 5000, 2))),
        ("What's {percent}% of {value}?", "Compute {percent} percent of {value}.",
         "How much is {percent} percent of {value}?"), topic="percent"),
    one("round_to_significant_figures", "Round a number to a number of significant figures.",
        (Slot("value", "float", "The number.", _floats(0.001, 99999, 5)),
         Slot("figures", "int", "Significant figures to keep.", [2, 3, 4])),
        ("Round {value} to {figures} significant figures.", "What's {value} with {figures} "
         "significant digits?", "{value} to {figures} sig figs?"), topic="rounding"),
    one("solve_quadratic_roots", "Find the real roots of a quadratic equation a*x^2 + b*x + c = "
        "0.",
        (Slot("a", "float", "Coefficient of x^2 (not zero).", [1, 2, 3, -1, 0.5]),
         Slot("b", "float", "Coefficient of x.", _ints(-20, 20)),
         Slot("c", "float", "Constant term.", _ints(-50, 50))),
        ("Solve {a}x^2 + {b}x + {c} = 0.", "Find the roots of the quadratic with a={a}, b={b}, "
         "c={c}.", "What x satisfies {a}*x^2 + {b}*x + {c} = 0?"), topic="quadratic"),
)

# --------------------------------------------------------------------------- science: units

_DIMENSIONS = (
    S("length", "length", units=["meters", "feet", "miles", "kilometers", "inches", "yards"]),
    S("mass", "mass", units=["kilograms", "pounds", "grams", "ounces", "stones"]),
    S("volume", "volume", units=["liters", "gallons", "milliliters", "cups", "fluid ounces"]),
    S("temperature", "temperature", units=["celsius", "fahrenheit", "kelvin"]),
    S("speed", "speed", units=["km/h", "mph", "m/s", "knots"]),
    S("area", "area", units=["square meters", "square feet", "acres", "hectares"]),
    S("pressure", "pressure", units=["pascals", "bar", "psi", "atmospheres"]),
    S("energy", "energy", units=["joules", "calories", "kilowatt-hours", "BTU"]),
    S("data_size", "digital storage size", units=["megabytes", "gigabytes", "terabytes",
                                                  "mebibytes"]),
    S("cooking_measure", "cooking measure", units=["tablespoons", "teaspoons", "cups",
                                                   "milliliters"]),
)
UNITS = (
    Family("convert_{key}_units", "Convert a {label} from one unit to another, e.g. {units[0]} "
           "to {units[1]}.",
           (Slot("value", "float", "The amount to convert.", _floats(0.5, 500, 2)),
            Slot("from_unit", "str", "Unit of the value, e.g. '{units[0]}'.",
                 _from_subject("units")),
            Slot("to_unit", "str", "Unit to convert to, e.g. '{units[1]}'.",
                 lambda rng, ctx: rng.choice([u for u in ctx["units"] if u != ctx["from_unit"]]))),
           ("Convert {value} {from_unit} to {to_unit}.", "How many {to_unit} is {value} "
            "{from_unit}?", "What's {value} {from_unit} in {to_unit}?",
            "{value} {from_unit} -> {to_unit}?"),
           _DIMENSIONS),
    Family("list_{key}_units", "List the units of {label} the converter supports, with their "
           "symbols.", (),
           ("Which {label} units can you convert?", "List the supported units of {label}.",
            "what {label} units do you know?"),
           _DIMENSIONS),
)

# --------------------------------------------------------------------------- science: education

_SUBJECTS = (S("physics", "physics", concepts=["Newton's third law", "entropy", "buoyancy",
                                               "wave interference"]),
             S("chemistry", "chemistry", concepts=["covalent bonds", "oxidation", "pH",
                                                   "Le Chatelier's principle"]),
             S("biology", "biology", concepts=["photosynthesis", "mitosis", "natural selection",
                                               "the Krebs cycle"]),
             S("history", "history", concepts=["the French Revolution", "the Silk Road",
                                               "the Cold War", "the Industrial Revolution"]),
             S("economics", "economics", concepts=["inflation", "opportunity cost",
                                                   "supply and demand",
                                                   "comparative advantage"]),
             S("computer_science", "computer science", concepts=["recursion", "hash tables",
                                                                 "binary search",
                                                                 "garbage collection"]))
_LEVEL = Slot("level", "str", "'middle school', 'high school' or 'university'.",
              ["middle school", "high school", "university"], default="high school")
EDUCATION = (
    Family("explain_{key}_concept", "Explain a {label} concept in plain words at a school "
           "level.",
           (Slot("concept", "str", "The concept, e.g. '{concepts[0]}'.",
                 _from_subject("concepts")), _LEVEL),
           ("Explain {concept} to me.", "Can you explain {concept} at a {level} level?",
            "I don't get {concept}. Help me understand it, {level} level please.",
            "What is {concept}, in simple terms?"),
           _SUBJECTS),
    Family("generate_{key}_quiz", "Generate multiple-choice {label} quiz questions on a topic.",
           (Slot("topic", "str", "Topic of the quiz.", _from_subject("concepts")),
            Slot("num_questions", "int", "Number of questions.", [3, 5, 10, 15], default=5),
            _LEVEL),
           ("Quiz me on {topic}.", "Make a {num_questions}-question quiz about {topic}.",
            "Write {num_questions} {level} multiple-choice questions on {topic}.",
            "test me on {topic}, {num_questions} questions"),
           _SUBJECTS),
    one("define_word", "Give the dictionary definition of an English word.",
        (Slot("word", "str", "The word.", ["serendipity", "ephemeral", "ubiquitous", "laconic",
                                            "quixotic", "sanguine"]),),
        ("What does {word} mean?", "Define {word}.", "meaning of {word}?"), topic="definition"),
    one("translate_sentence", "Translate a sentence from English into another language.",
        (Slot("sentence", "str", "The English sentence.",
              ["Where is the train station?", "I would like a coffee, please.",
               "How much does this cost?", "Nice to meet you."]),
         Slot("target_language", "str", "Language to translate into.", LANGUAGES)),
        ("Translate '{sentence}' into {target_language}.", "How do you say \"{sentence}\" in "
         "{target_language}?", "{target_language} for: {sentence}"), topic="translation"),
    one("search_online_courses", "Search online courses on a topic.",
        (Slot("topic", "str", "Course topic.", ["machine learning", "watercolor painting",
                                                "public speaking", "Spanish for beginners",
                                                "personal finance"]),
         Slot("free_only", "bool", "Only free courses.", [False], default=False),
         Slot("max_hours", "int", "Longest course length in hours.", [5, 10, 20],
              optional=True)),
        ("Find online courses on {topic}.", ("Any free courses about {topic}?",
                                            {"free_only": True}),
         "I want a {topic} course under {max_hours} hours.",
         ("Search all {topic} courses, paid ones too.", {"free_only": False})), topic="courses"),
    one("calculate_grade_average", "Average a student's grades, optionally weighted.",
        (Slot("grades", "List[int]", "The grades, out of 100.", lambda rng, ctx: [
            rng.randint(55, 100) for _ in range(rng.randint(3, 6))]),
         Slot("weights", "List[float]", "Weight of each grade, same length as grades.",
              lambda rng, ctx: [rng.choice([1.0, 2.0, 0.5]) for _ in ctx["grades"]],
              optional=True)),
        ("What's the average of my grades {grades}?", "Average these grades: {grades}, with "
         "weights {weights}.", "my grades are {grades}, what's my average?"),
        topic="grades"),
)

# --------------------------------------------------------------------------- the tool set

_FAMILIES: dict[str, tuple[Family, ...]] = {
    "weather": WEATHER, "calendar": CALENDAR, "messaging": MESSAGING, "smart_home": SMART_HOME,
    "health": HEALTH, "travel": TRAVEL, "sports": SPORTS, "music": MUSIC, "movies": MOVIES_TV,
    "cooking": COOKING, "markets": MARKETS, "banking": BANKING, "shopping": SHOPPING,
    "jobs": JOBS, "geography": GEOGRAPHY, "math": MATH, "units": UNITS, "education": EDUCATION,
}

#: Task clusters: one output file each (the CGC-LoRA task label is per file).
CLUSTERS: dict[str, tuple[str, ...]] = {
    "everyday": ("weather", "calendar", "messaging", "smart_home", "health"),
    "leisure": ("travel", "sports", "music", "movies", "cooking"),
    "money": ("markets", "banking", "shopping", "jobs"),
    "science": ("geography", "math", "units", "education"),
}

#: Pairs of tools (beyond a family's own ``conflicts``) that can answer each other's questions.
EXTRA_CONFLICTS = (
    ("list_calendar_events", "list_meetings"), ("delete_calendar_events", "delete_meetings"),
    ("search_calendar_events", "search_meetings"),
    ("calculate_grade_average", "compute_list_arithmetic_mean"),
)


def _build() -> dict[str, tuple[Tool, ...]]:
    domains = {d: build_tools(d, fams) for d, fams in _FAMILIES.items()}
    by_name: dict[str, Tool] = {}
    for tools in domains.values():
        for t in tools:
            if t.name in by_name:
                raise ValueError(f"tool name {t.name!r} is defined twice")
            by_name[t.name] = t
    pairs = {(a, b) for t in by_name.values() for a, b in [(t.name, c) for c in t.conflicts]}
    pairs |= set(EXTRA_CONFLICTS)
    links: dict[str, set[str]] = {}
    for a, b in pairs:
        if a not in by_name or b not in by_name:
            raise ValueError(f"conflict ({a!r}, {b!r}) names an unknown tool")
        links.setdefault(a, set()).add(b)
        links.setdefault(b, set()).add(a)
    return {d: tuple(Tool(t.function, t.domain, t.topics, frozenset(links.get(t.name, ())))
                     for t in tools) for d, tools in domains.items()}


#: domain -> its tools (the same for every seed).
DOMAINS: dict[str, tuple[Tool, ...]] = _build()
CLUSTER_OF: dict[str, str] = {d: c for c, ds in CLUSTERS.items() for d in ds}
assert sorted(CLUSTER_OF) == sorted(DOMAINS), "every domain belongs to exactly one cluster"


def all_tools() -> list[Tool]:
    return [t for tools in DOMAINS.values() for t in tools]


def tool_ids() -> dict[str, Tool]:
    """Stable id (``"<domain>/<name>"``) -> tool, for every tool of the corpus."""
    return {t.id: t for t in all_tools()}


def unseen_tools(seed: int = 0, share: float = DEFAULT_UNSEEN_SHARE) -> frozenset[str]:
    """Ids of the held-out tools: ``round(share * n)`` tools of each domain of ``n`` tools (at
    least one when ``share > 0``), a seeded choice among the domain's tools sorted by id."""
    if not 0 <= share < 1:
        raise ValueError(f"unseen share must be in [0, 1), got {share}")
    if share == 0:
        return frozenset()
    rng = random.Random(f"hammer-broad/unseen/{seed}/{share}")
    chosen: set[str] = set()
    for domain in sorted(DOMAINS):
        ids = sorted(t.id for t in DOMAINS[domain])
        chosen.update(rng.sample(ids, max(1, round(share * len(ids)))))
    return frozenset(chosen)


# --------------------------------------------------------------------------- rows

KINDS = ("single", "parallel", "multiple", "none")


def _kinds(rng: random.Random, n: int) -> list[str]:
    counts = {"parallel": round(n * PARALLEL_SHARE), "multiple": round(n * MULTIPLE_SHARE),
              "none": round(n * NO_CALL_SHARE)}
    kinds = [k for k, c in counts.items() for _ in range(c)]
    kinds += ["single"] * (n - len(kinds))
    rng.shuffle(kinds)
    return kinds


def _string_values(args: Args) -> list[str]:
    out: list[str] = []
    for v in args.values():
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):
            out.extend(x for x in v if isinstance(x, str))
    return out


def _join(first: str, second: str, second_args: Args, rng: random.Random) -> str:
    lowered = _lower_first(second)
    if not all(s in lowered for s in _string_values(second_args)):
        lowered = second  # it starts with a value (a name): keep its case
    return f"{first} {rng.choice(_JOINERS)}{lowered}"


def _required(tool: Tool) -> list[str]:
    return [p.name for p in tool.function.params
            if p.default is _NO_DEFAULT and not p.type.endswith("optional")]


def _distinct_requests(tool: Tool, a: Args, b: Args) -> bool:
    """Whether two calls of ``tool`` differ in a required argument (defaults do not count)."""
    return any(a.get(name) != b.get(name) for name in _required(tool))


def _can_answer(tool: Tool, asked: Tool) -> bool:
    """Whether ``tool`` might answer a question meant for ``asked`` (same topic, a conflict)."""
    return tool.name == asked.name or bool(tool.topics & asked.topics) \
        or tool.name in asked.conflicts


def _make_row(rng: random.Random, kind: str, gold: list[Tool],
              offer: dict[str, list[Tool]], cluster: str) -> tuple[str, list[Tool], list[Args]]:
    """(query, candidate tools in order, calls) of one row of ``kind``; ``gold`` are the tools
    rows may be about, ``offer`` the tools that may be listed, by domain."""
    if kind == "parallel":
        first = rng.choice([t for t in gold if _required(t)] or gold)
        chosen = [first, first]
    else:
        first = rng.choice(gold)
        chosen = [first]
        if kind == "multiple":
            seconds = [t for t in gold if t.domain == first.domain and t.name != first.name
                       and t.name not in first.conflicts]
            if seconds:
                chosen.append(rng.choice(seconds))
    parts = [fn.function.make(rng) for fn in chosen]
    for _ in range(50):  # parallel calls must ask for different things, not only say it twice
        if kind != "parallel" or _distinct_requests(first, parts[0][1], parts[1][1]):
            break
        parts[1] = first.function.make(rng)
    query = parts[0][0]
    for (q, args) in parts[1:]:
        query = _join(query, q, args, rng)
    same = offer[first.domain]
    others = [t for d in CLUSTERS[cluster] if d != first.domain for t in offer[d]]
    if kind == "none":
        fits = [t for t in same if not _can_answer(t, first)]
        tools = rng.sample(fits, min(len(fits), rng.randint(2, MAX_TOOLS - 1)))
        if len(tools) < 2 or rng.random() < OTHER_DOMAIN_SHARE:
            tools.append(rng.choice([t for t in others if not _can_answer(t, first)]))
        rng.shuffle(tools)
        return query, tools, []
    right = list({t.name: t for t in chosen}.values())
    blocked = {t.name for t in right} | {c for t in right for c in t.conflicts}
    total = rng.randint(max(2, len(right)), MAX_TOOLS)
    tools = list(right)
    if total > len(tools) and rng.random() < OTHER_DOMAIN_SHARE:
        tools.append(rng.choice([t for t in others if t.name not in blocked]))
    pool = [t for t in same if t.name not in blocked]
    tools += rng.sample(pool, min(len(pool), total - len(tools)))
    rng.shuffle(tools)
    calls = [{"name": fn.name, "arguments": args} for fn, (_, args) in zip(chosen, parts)]
    return query, tools, calls


def generate_cluster(cluster: str, rows: int, seed: int = 0, *, unseen: frozenset[str] = frozenset(),
                     held_out: bool = False) -> list[str]:
    """The JSONL lines (no newlines) of ``<cluster>.jsonl`` (``held_out=False``: rows about seen
    tools, listing seen tools only) or ``<cluster>.unseen.jsonl`` (``held_out=True``: rows about
    the ``unseen`` tools; their distractors may be any tool of the cluster)."""
    domains = CLUSTERS[cluster]
    tools = [t for d in domains for t in DOMAINS[d]]
    seen = [t for t in tools if t.id not in unseen]
    gold = [t for t in tools if t.id in unseen] if held_out else seen
    offer = {d: [t for t in DOMAINS[d] if held_out or t.id not in unseen] for d in domains}
    if rows and not gold:
        raise ValueError(f"cluster {cluster!r} has no {'unseen' if held_out else 'seen'} tools")
    if rows >= UNSEEN_ID_OFFSET:
        raise ValueError(f"at most {UNSEEN_ID_OFFSET - 1} rows per file, got {rows}")
    rng = random.Random(f"hammer-broad/{cluster}/{'unseen' if held_out else 'seen'}/{seed}")
    base = (list(CLUSTERS).index(cluster) + 1) * 1_000_000 + (UNSEEN_ID_OFFSET if held_out else 0)
    done: set[tuple[str, frozenset[str], str]] = set()
    lines = []
    for line_no, kind in enumerate(_kinds(rng, rows), 1):
        for _ in range(100):
            query, listed, calls = _make_row(rng, kind, gold, offer, cluster)
            key = (query, frozenset(t.name for t in listed), json.dumps(calls, sort_keys=True))
            if key not in done:  # ingest drops rows with the same query, tool set and calls
                break
        else:
            raise RuntimeError(f"{cluster}: could not make a new {kind} row after 100 tries")
        done.add(key)
        lines.append(_row_line(base + line_no, query, [t.function.spec() for t in listed], calls))
    return lines


def split_rows(rows_per_cluster: int, cluster: str, unseen: frozenset[str]) -> tuple[int, int]:
    """(seen rows, unseen rows) of a cluster: the unseen file gets the unseen tools' share."""
    tools = [t for d in CLUSTERS[cluster] for t in DOMAINS[d]]
    held = round(rows_per_cluster * sum(t.id in unseen for t in tools) / len(tools))
    return rows_per_cluster - held, held


def generate_corpus(out_dir: str | Path, rows_per_cluster: int = DEFAULT_ROWS_PER_CLUSTER,
                    seed: int = 0, unseen_share: float = DEFAULT_UNSEEN_SHARE) -> dict[str, Any]:
    """Write ``<cluster>.jsonl`` (and ``<cluster>.unseen.jsonl`` when ``unseen_share > 0``) for
    every cluster, plus ``tools.json`` (every tool's id, name, domain, cluster and whether it is
    held out); return the summary the CLI prints."""
    out_dir = Path(out_dir)
    unseen = unseen_tools(seed, unseen_share)
    files: dict[str, int] = {}
    used: set[str] = set()
    kinds = dict.fromkeys(KINDS, 0)
    for cluster in CLUSTERS:
        n_seen, n_unseen = split_rows(rows_per_cluster, cluster, unseen)
        parts = [(f"{cluster}.jsonl", n_seen, False)]
        if unseen:
            parts.append((f"{cluster}.unseen.jsonl", n_unseen, True))
        for name, n, held_out in parts:
            lines = generate_cluster(cluster, n, seed, unseen=unseen, held_out=held_out)
            atomic_write_text(out_dir / name, "".join(line + "\n" for line in lines))
            files[name] = len(lines)
            for line in lines:
                row = json.loads(line)
                used.update(t["name"] for t in json.loads(row["tools"]))
                answers = json.loads(row["answers"])
                kinds[_kind_of(answers)] += 1
    manifest = {"seed": seed, "unseen_share": unseen_share,
                "tools": [{"id": t.id, "name": t.name, "domain": t.domain,
                           "cluster": CLUSTER_OF[t.domain], "unseen": t.id in unseen}
                          for t in all_tools()]}
    atomic_write_text(out_dir / "tools.json", json.dumps(manifest, indent=1) + "\n")
    return {"files": files, "rows": sum(files.values()), "clusters": len(CLUSTERS),
            "domains": len(DOMAINS), "tools": len(all_tools()), "tools_in_rows": len(used),
            "unseen_tools": len(unseen), "kinds": kinds}


def _kind_of(answers: list[dict[str, Any]]) -> str:
    if not answers:
        return "none"
    if len(answers) == 1:
        return "single"
    return "parallel" if answers[0]["name"] == answers[1]["name"] else "multiple"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hammer_core.data.broad_corpus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write the .jsonl files and tools.json into")
    parser.add_argument("--rows-per-cluster", type=int, default=DEFAULT_ROWS_PER_CLUSTER,
                        help="rows per cluster, seen and unseen files together "
                             f"(default {DEFAULT_ROWS_PER_CLUSTER})")
    parser.add_argument("--seed", type=int, default=0, help="seed of rows and unseen choice")
    parser.add_argument("--unseen-share", type=float, default=DEFAULT_UNSEEN_SHARE,
                        help="share of each domain's tools held out into <cluster>.unseen.jsonl "
                             f"(default {DEFAULT_UNSEEN_SHARE}; 0: no unseen files)")
    args = parser.parse_args(argv)
    if args.rows_per_cluster < 0:
        parser.error("--rows-per-cluster must be >= 0")
    try:
        summary = generate_corpus(args.out_dir, args.rows_per_cluster, args.seed,
                                  args.unseen_share)
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
