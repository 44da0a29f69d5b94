"""Model cards (`leaderboards/cards.yaml`): a method's category, parameters, pretraining and links, for the rows.

A card is matched to a reported row by the method's name up to its first " (" or "," (CromSS's "MoCo (13B),
frozen" is MoCo), and to one of our rows by the adapter that made it. Every card names its source; links
must be https pages (the site links to them and loads nothing from them).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rsdg_bench.base.errors import ResultsError
from rsdg_bench.base.yaml_load import load_yaml

CARDS_FILE = Path(__file__).parent / "cards.yaml"
_LINK = r"^https://[^\s\"'<>]+$"


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    names: list[str] = []      # reported methods it describes (the name before " (" or ",")
    adapters: list[str] = []   # our adapters it describes
    category: str | None = None
    params: str | None = None
    pretraining: str | None = None
    paper: str | None = Field(default=None, pattern=_LINK)
    code: str | None = Field(default=None, pattern=_LINK)
    weights: str | None = Field(default=None, pattern=_LINK)
    source: str

    @property
    def links(self) -> list[tuple[str, str]]:
        """(text, https URL) of the card's pages, in a fixed order."""
        return [(name, url) for name, url in (("paper", self.paper), ("code", self.code), ("weights", self.weights))
                if url]

    @property
    def summary(self) -> str:
        """One line for a tooltip: what the card says, and where that comes from."""
        facts = [self.category, self.params and f"{self.params} parameters",
                 self.pretraining and f"pretraining: {self.pretraining}"]
        return "; ".join(f for f in facts if f) + f" (source: {self.source})"


class CardFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cards: list[ModelCard]


def method_stem(method: str) -> str:
    """The name a card matches: a reported method up to its first " (" or "," ("DOFA (9B), frozen" → DOFA)."""
    return re.split(r" \(|,", method, maxsplit=1)[0].strip()


class Cards:
    """Lookup of cards by reported method and by adapter; each name may have one card only."""

    def __init__(self, cards: list[ModelCard]) -> None:
        self.by_method: dict[str, ModelCard] = {}
        self.by_adapter: dict[str, ModelCard] = {}
        for card in cards:
            for index, names in ((self.by_method, card.names), (self.by_adapter, card.adapters)):
                for name in names:
                    if name in index:
                        raise ResultsError(f"{CARDS_FILE}: {name!r} has two model cards",
                                           "keep one card per method and per adapter")
                    index[name] = card

    def for_method(self, method: str) -> ModelCard | None:
        return self.by_method.get(method_stem(method))

    def for_adapter(self, adapter: str | None) -> ModelCard | None:
        return self.by_adapter.get(adapter or "")


@cache
def load_cards(path: Path = CARDS_FILE) -> Cards:
    try:
        return Cards(CardFile.model_validate(load_yaml(path.read_text())).cards)
    except (ValidationError, yaml.YAMLError) as exc:
        raise ResultsError(f"{path} is not a valid model-card file: {exc}",
                           "see leaderboards/cards.py for the format (every link an https URL)") from exc
