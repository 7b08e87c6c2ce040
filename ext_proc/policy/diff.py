"""What a new policy changes against the live one, for the one-line summary a reload logs."""

from __future__ import annotations

from dataclasses import dataclass

from ext_proc.policy.model import Policy

SHOWN_PER_KIND = 5


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def summary(self) -> str:
        if self.unchanged:
            return "no model changed"
        return ", ".join(_kind(names, word) for names, word in
                         ((self.added, "added"), (self.removed, "removed"), (self.changed, "changed")))  # fmt: skip


def _kind(names: tuple[str, ...], word: str) -> str:
    if not names:
        return f"0 {word}"
    shown = ", ".join(names[:SHOWN_PER_KIND])
    more = f" +{len(names) - SHOWN_PER_KIND} more" if len(names) > SHOWN_PER_KIND else ""
    return f"{len(names)} {word} ({shown}{more})"


def diff_policies(old: Policy, new: Policy) -> PolicyDiff:
    """Models by name: added and changed in the new policy's order, removed in the old one's."""
    before = {model.name: model for model in old.models}
    after = {model.name for model in new.models}
    return PolicyDiff(
        added=tuple(m.name for m in new.models if m.name not in before),
        removed=tuple(m.name for m in old.models if m.name not in after),
        changed=tuple(m.name for m in new.models if m.name in before and before[m.name] != m),
    )
