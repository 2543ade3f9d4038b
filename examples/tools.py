"""Function calling with the default model (SmolLM2-135M-Instruct), greedy: plain Python functions
are the tools. Their signatures and docstrings become JSON Schemas, the call format is compiled into
the grammar, so every call names a given function with arguments that validate; ``call`` returns
typed calls you can ``invoke``, ``run_tools`` runs the whole loop."""

from enum import Enum
from typing import Annotated

from pydantic import Field

from loomlm import LLM, SamplingParams, ToolCallError


class Unit(str, Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def get_weather(city: str, unit: Unit = Unit.CELSIUS, days: int | None = None) -> str:
    """Get the current weather (or a forecast) for a city.

    Args:
        city: The city name, e.g. "Paris".
        unit: The temperature unit.
        days: Number of forecast days; omit for the current weather.
    """
    degrees = 21 if unit is Unit.CELSIUS else 70
    return f"{city}: {degrees} degrees {unit.value}, sunny" + (f", {days}-day forecast" if days else "")


def search(query: Annotated[str, Field(min_length=1)], max_results: int = 3) -> list[str]:
    """Search the web and return the titles of the top results.

    Args:
        query: What to search for.
        max_results: How many results to return.
    """
    return [f"Result {i + 1} for {query!r}" for i in range(max_results)]


REQUESTS = [
    "What is the weather in London in celsius?",
    "Search the web for the best pizza recipes.",
]


def main() -> None:
    llm = LLM()
    tools = [get_weather, search]
    greedy = SamplingParams(temperature=0, max_tokens=256)

    for request in REQUESTS:
        print(f"\n{request}")
        try:  # one call each (parallel_tool_calls=False is a bound in the grammar)
            calls = llm.call(tools, request, sampling_params=greedy, parallel_tool_calls=False)
        except ToolCallError as error:
            print("  no call:", error)
            continue
        for call in calls:
            print(f"  {call.name}({call.arguments!r})")
            print("  ->", call.invoke())

    outputs = llm.chat([{"role": "user", "content": REQUESTS[0]}], greedy, tools=tools)
    completion = outputs[0].outputs[0]
    print("\nchat:", completion.finish_reason, [c.to_openai() for c in completion.tool_calls or []])

    result = llm.run_tools(tools, REQUESTS[0], max_rounds=3, sampling_params=greedy)
    print(f"\nrun_tools: finished={result.finished} after {result.rounds} rounds ({result.reason})")
    for message in result.messages:
        print(f"  {message['role']}: {message.get('content')!r} {message.get('tool_calls') or ''}")


if __name__ == "__main__":
    main()
