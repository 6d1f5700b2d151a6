"""Live quality from the label store: per version and cohort, and a rollout's comparison.

Shared by the router (`GET /admin/models/{name}/quality`) and the control actor (gauges,
the quality guard), so both read the same figures from the same join.
"""

from __future__ import annotations

from serve_app.core.quality import Quality, VersionQuality, common_days, version_quality
from serve_app.labels.store import LabelStore


def model_quality(
    store: LabelStore, model: str, since: float, roles: dict[int, str]
) -> list[VersionQuality]:
    """Every version with rows logged since `since`, newest version first."""
    found = store.quality_inputs(model, since)
    return [
        version_quality(version, roles.get(version, "retired"), counts, labelled)
        for version, (counts, labelled) in sorted(found.items(), reverse=True)
    ]


def rollout_quality(
    store: LabelStore, model: str, champion: int, challenger: int, since: float
) -> tuple[Quality, Quality] | None:
    """Champion and challenger over the cohorts both served since the rollout began: a
    cohort only one of them saw (an older, more mature one) would skew the comparison."""
    found = store.quality_inputs(model, since)
    if champion not in found or challenger not in found:
        return None
    days = common_days(found[champion][0], found[challenger][0])
    return (
        version_quality(champion, "champion", *found[champion], days=days).total,
        version_quality(challenger, "challenger", *found[challenger], days=days).total,
    )
