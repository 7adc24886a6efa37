"""The one table the benchmark prints: a row per measurement, a column per data scale."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    """Rows of cells under a title; cells are text, ``-`` where not measured."""

    columns: list[str]
    rows: list[tuple[str, list[str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, label: str, cells: dict[str, str]) -> None:
        """A row: ``cells`` maps column names to text."""
        self.rows.append((label, [cells.get(c, "-") for c in self.columns]))

    def section(self, title: str) -> None:
        """A heading row."""
        self.rows.append((f"== {title}", ["" for _ in self.columns]))

    def render(self) -> str:
        """The table as fixed-width text, then the notes."""
        head = ["measurement", *self.columns]
        body = [[label, *cells] for label, cells in self.rows]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "| " + " | ".join([first, *rest]) + " |"

        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        out = [line(head), rule, *(line(r) for r in body)]
        if self.notes:
            out.append("")
            out.extend(f"- {n}" for n in self.notes)
        return "\n".join(out)


def ms(value: float) -> str:
    """Milliseconds with precision that suits the size."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def rate(value: float) -> str:
    """Events per second, grouped by thousands."""
    return f"{value:,.0f}"


def times(value: float) -> str:
    """A ratio."""
    return f"{value:,.1f}x"


def times2(value: float) -> str:
    """A ratio near 1, to two decimals."""
    return f"{value:.2f}x"
