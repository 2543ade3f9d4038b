"""The function-calling benchmark's workload: twelve plain Python functions and 44 plain-language
requests, each with the calls a correct answer makes (none for the requests that need no tool).

An expected argument is a value (compared case-insensitively for strings, numerically for numbers)
or ``Has("word", ...)`` for free text that must mention the words. Arguments a correct call may
leave out are the optional ones: given, they must equal their default."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Unit(str, Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Language(str, Enum):
    FRENCH = "french"
    SPANISH = "spanish"
    GERMAN = "german"
    ITALIAN = "italian"
    JAPANESE = "japanese"


class TravelMode(str, Enum):
    DRIVING = "driving"
    WALKING = "walking"
    TRANSIT = "transit"
    CYCLING = "cycling"


def get_weather(city: str, unit: Unit = Unit.CELSIUS, days: int | None = None) -> str:
    """Get the current weather, or a forecast, for a city.

    Args:
        city: The city name, e.g. "Paris".
        unit: The temperature unit.
        days: Number of forecast days; omit for the current weather.
    """
    return f"{city}: 21 degrees {unit.value}"


def search_web(query: str, max_results: int = 3) -> list[str]:
    """Search the web and return the titles of the top results.

    Args:
        query: What to search for.
        max_results: How many results to return.
    """
    return [f"{query} #{i}" for i in range(max_results)]


def send_email(to: str, subject: str, body: str) -> str:
    """Send an email.

    Args:
        to: The recipient's email address.
        subject: The subject line.
        body: The message text.
    """
    return f"sent to {to}"


def set_timer(minutes: int, label: str | None = None) -> str:
    """Start a countdown timer.

    Args:
        minutes: How many minutes the timer runs.
        label: An optional name for the timer.
    """
    return f"timer {minutes} min"


def convert_currency(amount: float, from_currency: str, to_currency: str) -> float:
    """Convert an amount of money between currencies.

    Args:
        amount: The amount to convert.
        from_currency: The three-letter code of the currency to convert from, e.g. "USD".
        to_currency: The three-letter code of the currency to convert to, e.g. "EUR".
    """
    return amount * 0.9


def get_stock_price(symbol: str) -> float:
    """Get the latest price of a stock.

    Args:
        symbol: The stock's ticker symbol, e.g. "AAPL".
    """
    return 100.0


def translate(text: str, target_language: Language) -> str:
    """Translate text into another language.

    Args:
        text: The text to translate.
        target_language: The language to translate into.
    """
    return text


def create_event(title: str, date: str, time: str | None = None) -> str:
    """Add an event to the calendar.

    Args:
        title: What the event is.
        date: The day, as YYYY-MM-DD.
        time: The start time, as HH:MM; omit for an all-day event.
    """
    return f"{title} on {date}"


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression.

    Args:
        expression: The expression, e.g. "2 * (3 + 4)".
    """
    return 0.0


def play_music(song: str, artist: str | None = None) -> str:
    """Play a song.

    Args:
        song: The song's title.
        artist: The artist, if known.
    """
    return f"playing {song}"


def book_table(restaurant: str, party_size: int, time: str) -> str:
    """Book a table at a restaurant.

    Args:
        restaurant: The restaurant's name.
        party_size: How many people.
        time: The time of the booking, as HH:MM.
    """
    return f"booked {restaurant}"


def get_directions(origin: str, destination: str, mode: TravelMode = TravelMode.DRIVING) -> str:
    """Get directions from one place to another.

    Args:
        origin: Where the trip starts.
        destination: Where the trip ends.
        mode: How to travel.
    """
    return f"{origin} -> {destination}"


FUNCTIONS = [
    get_weather, search_web, send_email, set_timer, convert_currency, get_stock_price,
    translate, create_event, calculate, play_music, book_table, get_directions,
]  # fmt: skip


@dataclass(frozen=True)
class Has:
    """Free text that must mention each word (case-insensitive)."""

    words: tuple[str, ...]

    def __init__(self, *words: str) -> None:
        object.__setattr__(self, "words", words)


@dataclass(frozen=True)
class Case:
    request: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    kind: str = "simple"  # simple | parallel | no-tool


def c(request: str, *calls: tuple[str, dict[str, Any]]) -> Case:
    return Case(request, list(calls), "parallel" if len(calls) > 1 else "simple" if calls else "no-tool")


CASES = [
    c(
        "What is the weather in Paris in fahrenheit?",
        ("get_weather", {"city": "Paris", "unit": "fahrenheit"}),
    ),
    c("How warm is it in Tokyo right now?", ("get_weather", {"city": "Tokyo"})),
    c("Give me the 5-day forecast for Berlin.", ("get_weather", {"city": "Berlin", "days": 5})),
    c("Search the web for the best pizza recipes.", ("search_web", {"query": Has("pizza")})),
    c("Find articles about electric cars.", ("search_web", {"query": Has("electric car")})),
    c("Look up the history of the Roman empire online.", ("search_web", {"query": Has("roman")})),
    c(
        "Email bob@example.com with the subject Lunch and say see you at noon.",
        ("send_email", {"to": "bob@example.com", "subject": "Lunch", "body": Has("noon")}),
    ),
    c(
        "Send an email to alice@work.org, subject: Report, body: the report is attached.",
        ("send_email", {"to": "alice@work.org", "subject": "Report", "body": Has("report")}),
    ),
    c("Set a timer for 10 minutes.", ("set_timer", {"minutes": 10})),
    c("Start a 25 minute timer called focus.", ("set_timer", {"minutes": 25, "label": "focus"})),
    c("Timer for 3 minutes please.", ("set_timer", {"minutes": 3})),
    c(
        "Convert 100 USD to EUR.",
        ("convert_currency", {"amount": 100, "from_currency": "USD", "to_currency": "EUR"}),
    ),
    c(
        "How much is 50 GBP in JPY?",
        ("convert_currency", {"amount": 50, "from_currency": "GBP", "to_currency": "JPY"}),
    ),
    c("What is the stock price of AAPL?", ("get_stock_price", {"symbol": "AAPL"})),
    c("Get me the latest price for the ticker MSFT.", ("get_stock_price", {"symbol": "MSFT"})),
    c("How is TSLA trading today?", ("get_stock_price", {"symbol": "TSLA"})),
    c(
        "Translate 'good morning' into Spanish.",
        ("translate", {"text": Has("good morning"), "target_language": "spanish"}),
    ),
    c(
        "How do you say 'thank you' in Japanese?",
        ("translate", {"text": Has("thank you"), "target_language": "japanese"}),
    ),
    c(
        "Translate 'where is the station' to German.",
        ("translate", {"text": Has("station"), "target_language": "german"}),
    ),
    c(
        "Add a dentist appointment on 2025-03-14 at 09:30 to my calendar.",
        ("create_event", {"title": Has("dentist"), "date": "2025-03-14", "time": "09:30"}),
    ),
    c(
        "Put Mom's birthday on 2025-07-02 in the calendar.",
        ("create_event", {"title": Has("birthday"), "date": "2025-07-02"}),
    ),
    c("What is 12 * 34?", ("calculate", {"expression": Has("12", "34")})),
    c("Calculate (7 + 5) / 3.", ("calculate", {"expression": Has("7", "5", "3")})),
    c("Compute 2 to the power of 10.", ("calculate", {"expression": Has("2", "10")})),
    c("Play Bohemian Rhapsody by Queen.", ("play_music", {"song": "Bohemian Rhapsody", "artist": "Queen"})),
    c("Play the song Yesterday.", ("play_music", {"song": "Yesterday"})),
    c(
        "Book a table for 4 at Luigi's at 19:00.",
        ("book_table", {"restaurant": "Luigi's", "party_size": 4, "time": "19:00"}),
    ),
    c(
        "Reserve Sushi Zen for two people at 20:30.",
        ("book_table", {"restaurant": "Sushi Zen", "party_size": 2, "time": "20:30"}),
    ),
    c(
        "How do I get from the airport to the city center by transit?",
        ("get_directions", {"origin": Has("airport"), "destination": Has("center"), "mode": "transit"}),
    ),
    c(
        "Walking directions from Central Park to Times Square.",
        ("get_directions", {"origin": "Central Park", "destination": "Times Square", "mode": "walking"}),
    ),
    c(
        "Directions from Boston to New York.",
        ("get_directions", {"origin": "Boston", "destination": "New York"}),
    ),
    c(
        "What's the weather in London and in Madrid?",
        ("get_weather", {"city": "London"}),
        ("get_weather", {"city": "Madrid"}),
    ),
    c(
        "Set a 5 minute timer and play Yellow Submarine.",
        ("set_timer", {"minutes": 5}),
        ("play_music", {"song": "Yellow Submarine"}),
    ),
    c(
        "Get the stock prices of AMZN and GOOG.",
        ("get_stock_price", {"symbol": "AMZN"}),
        ("get_stock_price", {"symbol": "GOOG"}),
    ),
    c(
        "Search the web for cheap flights and check the weather in Rome.",
        ("search_web", {"query": Has("flights")}),
        ("get_weather", {"city": "Rome"}),
    ),
    c(
        "Translate 'hello' into French and into Italian.",
        ("translate", {"text": Has("hello"), "target_language": "french"}),
        ("translate", {"text": Has("hello"), "target_language": "italian"}),
    ),
    c(
        "Convert 20 EUR to USD and calculate 20 * 1.1.",
        ("convert_currency", {"amount": 20, "from_currency": "EUR", "to_currency": "USD"}),
        ("calculate", {"expression": Has("20", "1.1")}),
    ),
    c("Hi! How are you today?"),
    c("Write a haiku about autumn leaves."),
    c("Thanks, that is all I needed."),
    c("Tell me a joke about cats."),
    c("What does the word 'ephemeral' mean?"),
    c("Explain in one sentence why the sky is blue."),
    c("Good night!"),
]
