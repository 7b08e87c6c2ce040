"""What a new policy changes against the live one, for the one-line summary a reload logs.

Models are told apart by name, the key their breaker state and metrics live under: a model whose
match, tiers, breaker or failure settings differ is "changed", not removed and added again.
"""

from __future__ import annotations

from dataclasses import dataclass

from ext_proc.policy.model import Policy

SHOWN_PER_KIND = 5
"""Names listed per kind in a summary: a reload of 10,000 new models must still log one short line."""


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    added: tuple[str, ...]
    """In the new policy's order."""
    removed: tuple[str, ...]
    """In the old policy's order: the new one no longer has them."""
    changed: tuple[str, ...]
    """In the new policy's order."""

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def summary(self) -> str:
        """``2 added (a, b), 0 removed, 1 changed (d)``: every kind is named, an empty one too, so
        that log lines line up and a search for "removed" finds every reload."""
        if self.unchanged:
            return "no model changed"
        kinds = ((self.added, "added"), (self.removed, "removed"), (self.changed, "changed"))
        return ", ".join(_listed(names, word) for names, word in kinds)


def _listed(names: tuple[str, ...], word: str) -> str:
    if not names:
        return f"0 {word}"
    shown = ", ".join(names[:SHOWN_PER_KIND])
    more = f" +{len(names) - SHOWN_PER_KIND} more" if len(names) > SHOWN_PER_KIND else ""
    return f"{len(names)} {word} ({shown}{more})"


def diff_policies(old: Policy, new: Policy) -> PolicyDiff:
    before = {model.name: model for model in old.models}
    after = {model.name for model in new.models}
    return PolicyDiff(
        added=tuple(model.name for model in new.models if model.name not in before),
        removed=tuple(model.name for model in old.models if model.name not in after),
        changed=tuple(model.name for model in new.models if model.name in before and before[model.name] != model),
    )
