"""Promotion: move `champion` to a challenger that passes its model's gates, roll back, list.

Each run tags its registered version with its out-of-time metrics; `promote` compares the
challenger's tags with the champion's, gate by gate. For `customer-scorer`, training also
scores the champion on the challenger's own test cutoff (`head_to_head`), so both are
compared on the same customers and season whenever it can.

Examples
--------
>>> gate = Gate(Tag.PURCHASES_MAE, higher_is_better=False, tolerance=0.02)
>>> gate.worse(new=1.03, old=1.00), gate.worse(new=1.01, old=1.00)
(True, False)
>>> compare({"churn_roc_auc": "0.81", "purchases_mae": "1.00"},
...         {"churn_roc_auc": "0.80", "purchases_mae": "1.00"})
''
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import pandas as pd
from mlflow import MlflowClient

from features.errors import DataError
from training.candidates import LABELS, Target
from training.evaluate import Metric, metric_value
from training.registry.names import VS, Alias, RegisteredModel, Tag
from training.registry.versions import aliased_version, load_scorer

if TYPE_CHECKING:
    from training.train import TrainResult


@dataclass(frozen=True)
class Gate:
    """A version tag `promote` compares, challenger against champion.

    The challenger fails when it is worse by more than `tolerance`: an absolute difference
    when higher is better, a fraction of the champion's value when lower is better.
    """

    tag: Tag
    higher_is_better: bool
    tolerance: float

    def worse(self, new: float, old: float) -> bool:
        """True when `new` falls short of `old` by more than the tolerance."""
        if self.higher_is_better:
            return old - new > self.tolerance
        return new > old * (1 + self.tolerance)

    def improves(self, new: float, old: float) -> bool:
        """True when `new` is strictly better than `old`."""
        return new > old if self.higher_is_better else new < old


GATES: Mapping[RegisteredModel, tuple[Gate, ...]] = MappingProxyType({
    RegisteredModel.SCORER: (
        Gate(Tag.CHURN_ROC_AUC, higher_is_better=True, tolerance=0.002),
        Gate(Tag.PURCHASES_MAE, higher_is_better=False, tolerance=0.02),
    ),
    RegisteredModel.UPLIFT: (
        Gate(Tag.QINI_AUC, higher_is_better=True, tolerance=0.005),
        Gate(Tag.UPLIFT_AT_30, higher_is_better=True, tolerance=0.002),
    ),
})
# The tags `list_versions` shows after each model's gates.
_LISTED: Mapping[RegisteredModel, tuple[Tag, ...]] = MappingProxyType({
    RegisteredModel.SCORER: (Tag.TEST_AS_OF,),
    RegisteredModel.UPLIFT: (Tag.OUTCOME, Tag.OFFERS),
})


def compare(challenger: Mapping[str, str], champion: Mapping[str, str],
            gates: Sequence[Gate] = GATES[RegisteredModel.SCORER]) -> str:
    """'' if the challenger passes every gate and improves on one, else why it does not."""
    improved = False
    for gate in gates:
        if gate.tag not in challenger or gate.tag not in champion:
            return f"lacks the {gate.tag} tag to compare"
        new, old = float(challenger[gate.tag]), float(champion[gate.tag])
        if gate.worse(new, old):
            return f"is worse on {gate.tag}: {new:.4f} vs {old:.4f}"
        improved |= gate.improves(new, old)
    return "" if improved else "does not improve on any gate"


def head_to_head(result: TrainResult) -> dict[str, str]:
    """The champion's gate metrics on this run's test cutoff, as tags for the new version.

    Each run's own metrics come from its own test window (another season, other customers), so
    two runs' numbers do not compare. The champion is scored on this run's test frame instead,
    unless its training saw labels in that window (its test as_of is later than this one's):
    then {} and promotion falls back to each run's own numbers.
    """
    champion = aliased_version(RegisteredModel.SCORER, Alias.CHAMPION)
    if champion is None or Tag.TEST_AS_OF not in champion.tags:
        return {}
    if dt.date.fromisoformat(champion.tags[Tag.TEST_AS_OF]) > result.cutoffs.test:
        return {}
    scorer = load_scorer(str(champion.version))
    if result.test_components is not None:
        scorer = scorer.with_components(result.test_components)
    scores = scorer.score(result.test, reasons=False)
    test = result.test
    churn = metric_value(Metric.CHURN_ROC_AUC, test[LABELS[Target.CHURN]].astype(int),
                         scores["churn_probability"])
    purchases = metric_value(Metric.PURCHASES_MAE, test[LABELS[Target.PURCHASES]],
                             scores["expected_purchases"])
    return {f"{VS}version": str(champion.version),
            f"{VS}{Tag.CHURN_ROC_AUC}": str(churn), f"{VS}{Tag.PURCHASES_MAE}": str(purchases)}


def promote(model: RegisteredModel | str = RegisteredModel.SCORER, *, force: bool = False) -> str:
    """Move `champion` to the challenger if it beats the champion on the model's gates.

    `GATES` say, per model, how much worse each tag (written by each run) may get; at least
    one must improve. The champion's numbers are its scores on the challenger's own test
    cutoff when training measured them (`head_to_head`), else its own run's. `force` skips
    the gates and is recorded on the version.
    """
    name = RegisteredModel(model)
    client = MlflowClient()
    challenger = aliased_version(name, Alias.CHALLENGER)
    if challenger is None:
        raise DataError(f"{name}: no challenger to promote (run `retention train`)")
    champion = aliased_version(name, Alias.CHAMPION)
    if champion is not None and champion.version == challenger.version:
        return f"version {challenger.version} is already the champion"
    if champion is not None and not force:
        gates = GATES[name]
        same = challenger.tags.get(f"{VS}version") == str(champion.version)
        theirs = ({g.tag: challenger.tags[f"{VS}{g.tag}"] for g in gates} if same
                  else champion.tags)
        verdict = compare(challenger.tags, theirs, gates)
        if verdict:
            basis = ("both scored on the challenger's test cutoff" if same
                     else "each on its own test cutoff")
            return (f"kept champion v{champion.version}: challenger v{challenger.version} "
                    f"{verdict} ({basis}; use --force to override)")
    client.set_registered_model_alias(name, Alias.CHAMPION, challenger.version)
    if champion is not None:
        client.set_model_version_tag(name, challenger.version, Tag.PREVIOUS_CHAMPION,
                                     champion.version)
    client.set_model_version_tag(name, challenger.version, Tag.PROMOTED_FORCED,
                                 str(bool(force and champion is not None)).lower())
    was = f" (was v{champion.version})" if champion is not None else ""
    return f"champion is now v{challenger.version}{was}" + (" [forced]" if force else "")


def rollback(model: RegisteredModel | str = RegisteredModel.SCORER) -> str:
    """Restore the champion that the current one replaced."""
    name = RegisteredModel(model)
    client = MlflowClient()
    champion = aliased_version(name, Alias.CHAMPION)
    if champion is None:
        raise DataError(f"{name}: no champion to roll back")
    previous = champion.tags.get(Tag.PREVIOUS_CHAMPION)
    if not previous:
        raise DataError(f"{name}: champion v{champion.version} replaced no earlier version")
    client.set_registered_model_alias(name, Alias.CHAMPION, previous)
    client.set_model_version_tag(name, previous, Tag.RESTORED_FROM, champion.version)
    return f"champion is now v{previous} (rolled back from v{champion.version})"


def list_versions(model: RegisteredModel | str = RegisteredModel.SCORER) -> pd.DataFrame:
    """Registered versions of `model` with their aliases, gate metrics and what they cover.

    The aliases come from the registered model: `search_model_versions` leaves each
    version's aliases empty.
    """
    name = RegisteredModel(model)
    client = MlflowClient()
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        return pd.DataFrame()
    aliases: dict[str, list[str]] = {}
    for alias, version in sorted(client.get_registered_model(name).aliases.items()):
        aliases.setdefault(str(version), []).append(alias)
    tags = [g.tag for g in GATES[name]] + list(_LISTED[name])
    rows = [{"version": int(v.version), "aliases": ",".join(aliases.get(str(v.version), [])),
             "run_id": v.run_id, **{t.value: v.tags.get(t) for t in tags}} for v in versions]
    return pd.DataFrame(rows).sort_values("version", ignore_index=True)
