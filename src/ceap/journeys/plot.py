"""A journey as a graph: Mermaid (``flowchart``), Graphviz DOT, indented text, or a picture
(SVG or PNG, :mod:`ceap.journeys.picture`)."""

from __future__ import annotations

from typing import Any

from ceap.durations import format_duration
from ceap.spec.journey import END, Journey, Step

FORMATS = ("mermaid", "dot", "text", "svg", "png")
#: the format a ``--output`` file's suffix implies when ``--format`` is not given
SUFFIXES = {".mmd": "mermaid", ".mermaid": "mermaid", ".dot": "dot", ".gv": "dot", ".txt": "text",
            ".svg": "svg", ".png": "png"}


def label(step: Step, action: Any = None) -> str:
    """What a step does, in a few words."""
    if step.send is not None:
        channels = step.send.channels or (action.channels if action is not None else [])
        template = step.send.template or (action.template if action is not None else None)
        return f"send {'/'.join(channels)}" + (f" ({template})" if template else "")
    if step.wait_for is not None:
        wait = step.wait_for
        what = " or ".join(wait.events) if wait.events else "nothing (a delay)"
        return f"wait {format_duration(wait.within)} for {what}"
    if step.branch is not None:
        return f"if {step.branch.if_}"
    return f"exit: {step.exit}"


def _esc(text: str) -> str:
    return text.replace('"', "'")


def mermaid(journey: Journey, action: Any = None) -> str:
    lines = ["flowchart TD", "  enter((enter)) --> " + journey.first]
    for step in journey.steps:
        text = _esc(f"{step.id}: {label(step, action)}")
        shape = (f'{{"{text}"}}' if step.branch is not None else f'(["{text}"])' if step.wait_for
                 else f'[/"{text}"/]' if step.exit is not None else f'["{text}"]')
        lines.append(f"  {step.id}{shape}")
    for step_id, targets in journey.edges().items():
        for name, target in targets:
            node = "done" if target == END else target
            lines.append(f"  {step_id} -->{f'|{_esc(name)}|' if name else ''} {node}")
    lines.append("  done((end))")
    if journey.exit_on:
        lines.append(f"  exits[/\"any step: exit on {_esc(', '.join(journey.exit_on))}\"/]")
    return "\n".join(lines) + "\n"


def dot(journey: Journey, action: Any = None) -> str:
    lines = ["digraph journey {", "  rankdir=TB;", '  enter [shape=circle, label="enter"];',
             '  done [shape=doublecircle, label="end"];', f"  enter -> {journey.first};"]
    shapes = {"send": "box", "wait_for": "ellipse", "branch": "diamond", "exit": "octagon"}
    for step in journey.steps:
        lines.append(f'  {step.id} [shape={shapes[step.kind]}, label="{_esc(step.id)}\\n'
                     f'{_esc(label(step, action))}"];')
    for step_id, targets in journey.edges().items():
        for name, target in targets:
            attrs = f' [label="{_esc(name)}"]' if name else ""
            lines.append(f"  {step_id} -> {'done' if target == END else target}{attrs};")
    if journey.exit_on:
        lines.append(f'  exits [shape=note, label="any step: exit on {_esc(", ".join(journey.exit_on))}"];')
    return "\n".join([*lines, "}"]) + "\n"


def text(journey: Journey, action: Any = None) -> str:
    lines = [f"enter -> {journey.first}"]
    for step_id, targets in journey.edges().items():
        step = journey.step(step_id)
        assert step is not None
        lines.append(f"{step_id}: {label(step, action)}")
        for name, target in targets:
            lines.append(f"  {name or 'then'} -> {target}")
    if journey.exit_on:
        lines.append(f"any step: exit on {', '.join(journey.exit_on)}")
    again = journey.reentry
    lines.append(f"re-entry: {again if isinstance(again, str) else 'after ' + format_duration(again)}")
    return "\n".join(lines) + "\n"


def render(journey: Journey, fmt: str, action: Any = None, title: str | None = None) -> str:
    """The graph as text in ``fmt`` (``png`` is bytes: :func:`ceap.journeys.picture.png`)."""
    if fmt == "svg":
        from ceap.journeys.picture import svg

        return svg(journey, action, title)
    return {"mermaid": mermaid, "dot": dot, "text": text}[fmt](journey, action)
