"""The adapter registry: which task adapters are resident, their runner slots, and the model cards listed to
clients. Reads are safe from any thread (plain dict lookups); writes happen on the engine's thread."""

from __future__ import annotations

from dataclasses import dataclass

from inlaid_worker.engine.error_kind import ErrorKind


class UnknownModelError(LookupError):
    """The requested model is neither the base model nor a resident adapter."""

    kind = ErrorKind.UNKNOWN_MODEL


@dataclass(frozen=True)
class ModelCard:
    id: str  # task name, or the base model id
    parent: str  # base model id for adapters, "" for the base
    rank: int  # LoRA rank, 0 for the base
    target_modules: tuple[str, ...]
    max_model_len: int


@dataclass(frozen=True)
class AdapterEntry:
    card: ModelCard
    slot: int
    source: str = ""  # the path LoadAdapter read it from ("" for --adapters-dir, checkpoint and direct adds)
    digest: str = ""  # the content digest of what LoadAdapter read there (lora.digest; "" when source is "")


class AdapterRegistry:
    def __init__(self, base_model_id: str, max_model_len: int) -> None:
        self.base_card = ModelCard(base_model_id, "", 0, (), max_model_len)
        self._entries: dict[str, AdapterEntry] = {}

    @property
    def base_model_id(self) -> str:
        return self.base_card.id

    def is_base(self, model: str) -> bool:
        return model in ("", self.base_card.id)

    def resolve(self, model: str) -> AdapterEntry | None:
        """None for the base model; raises UnknownModelError for anything not resident."""
        if self.is_base(model):
            return None
        entry = self._entries.get(model)
        if entry is None:
            raise UnknownModelError(f"the model {model!r} does not exist")
        return entry

    def add(
        self, name: str, slot: int, rank: int, target_modules: tuple[str, ...], source: str = "", digest: str = ""
    ) -> ModelCard:
        card = ModelCard(name, self.base_card.id, rank, tuple(target_modules), self.base_card.max_model_len)
        entry = AdapterEntry(card, slot, source, digest if source else "")
        self._entries = {**self._entries, name: entry}  # copy-on-write for readers
        return card

    def remove(self, name: str) -> AdapterEntry:
        entry = self.resolve(name)
        if entry is None:
            raise ValueError("the base model cannot be unloaded")
        self._entries = {k: v for k, v in self._entries.items() if k != name}
        return entry

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    @property
    def names(self) -> list[str]:
        return sorted(self._entries)

    @property
    def sources(self) -> dict[str, str]:
        """Adapter name -> the path LoadAdapter read it from, for the adapters that have one (WorkerInfo.adapter_paths)."""
        entries = self._entries  # one snapshot (copy-on-write)
        return {n: e.source for n, e in entries.items() if e.source}

    @property
    def digests(self) -> dict[str, str]:
        """Adapter name -> the digest of what LoadAdapter read, for the adapters of `sources` that have one
        (WorkerInfo.adapter_digests)."""
        entries = self._entries  # one snapshot (copy-on-write)
        return {n: e.digest for n, e in entries.items() if e.digest}  # (add() keeps a digest only with a source)

    @property
    def cards(self) -> list[ModelCard]:
        return [self.base_card] + [self._entries[n].card for n in self.names]
