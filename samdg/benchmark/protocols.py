"""Cross-domain protocols: which models to train, on which domains, and which cases each is tested on.

- ``single-source``: one model per source domain (every domain, or those given), trained on that domain's
  training cases only (``samdg_train ... all --source-domains A``). Each model predicts the test cases of every
  domain: its own domain gives the in-domain diagonal cell, the others the cross-domain cells.
- ``leave-one-domain-out``: for each held-out domain (every domain, or those given), one model trained on all the
  other domains. The held-out column is the cross-domain result; the training domains' own test cases give the
  in-domain cells of the row.

Models are trained with fold ``all`` (``--split first90``: fold ``first90``, DeSAM's held-out split, predicting with
the checkpoint selected on it) into the usual results folder (``fold_all__src-A+B``), so a model trained
earlier, by ``samdg_train`` or by another benchmark, is reused as it is; an interrupted training resumes.

Test cases of a domain are its labelled ``imagesTs`` cases. A domain without any is tested on its ``imagesTr``
cases instead, but only by models that did not train on it (said in the notes); its in-domain cell stays empty.
``--targets`` restricts the tested domains (the matrix columns), e.g. a paper's target sites only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from samdg.dataset.raw import Case, RawDataset
from samdg.errors import SamdgError

PROTOCOLS = ("single-source", "leave-one-domain-out")


@dataclass(frozen=True)
class ModelPlan:
    """One model of a protocol: its row label in the matrix and the domains it trains on."""

    row: str
    training_domains: tuple[str, ...]


@dataclass
class EvaluationCases:
    """The cases a model is tested on: ``{case id: Case}`` and which split each came from (``Ts`` or ``Tr``)."""

    cases: dict[str, Case] = field(default_factory=dict)
    split: dict[str, str] = field(default_factory=dict)


def check_domains(raw: RawDataset) -> list[str]:
    """The dataset's domain names; a dataset without a ``domains`` map or with fewer than 2 domains is an error."""
    json_path = raw.folder / "dataset.json"
    if not raw.has_domain_map:
        raise SamdgError(f"{json_path}: no 'domains' map (case id -> domain), so there is nothing to benchmark across "
                         "domains; add one (see documentation/dataset_format.md)")
    names = raw.domain_names
    if len(names) < 2:
        raise SamdgError(f"{json_path}: the 'domains' map names {len(names)} domain ({', '.join(names)}); "
                         "a cross-domain "
                         "benchmark needs at least 2")
    return names


def parse_sources(text: str | Sequence[str] | None, domains: Sequence[str], option: str = "--sources") -> list[str]:
    """``"A,B"`` -> ["A", "B"] (order kept, duplicates dropped); None -> every domain; unknown names are an error."""
    if text is None:
        return list(domains)
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    unknown = [n for n in names if n not in domains]
    if unknown or not names:
        raise SamdgError(f"{option} {text}: unknown domain(s) {', '.join(unknown) or '(none given)'}; the dataset's "
                         f"domains are {', '.join(domains)}")
    return names


def model_plans(protocol: str, domains: Sequence[str], sources: Sequence[str]) -> list[ModelPlan]:
    """The models a protocol trains. ``sources``: source domains (single-source) or held-out domains (LODO)."""
    if protocol == "single-source":
        return [ModelPlan(domain, (domain,)) for domain in sources]
    if protocol == "leave-one-domain-out":
        return [ModelPlan(f"all but {held_out}", tuple(d for d in domains if d != held_out)) for held_out in sources]
    raise SamdgError(f"--protocol {protocol}: choose one of {', '.join(PROTOCOLS)}")


def evaluation_cases(raw: RawDataset, training_domains: Sequence[str],
                     targets: Sequence[str] | None = None) -> EvaluationCases:
    """The labelled cases of ``targets`` (None: every domain) that a model trained on ``training_domains`` is
    tested on (rule in the module docstring)."""
    result = EvaluationCases()
    for domain in raw.domain_names if targets is None else targets:
        test = {c.case_id: c for c in raw.test_cases.values() if c.domain == domain and c.label_path}
        if test:
            result.cases.update(test)
            result.split.update({case_id: "Ts" for case_id in test})
        elif domain not in training_domains:
            train = {c.case_id: c for c in raw.training_cases.values() if c.domain == domain and c.label_path}
            result.cases.update(train)
            result.split.update({case_id: "Tr" for case_id in train})
    return result


def evaluation_notes(raw: RawDataset, targets: Sequence[str] | None = None) -> list[str]:
    """Lines for the report about target domains (None: every domain) that have no labelled test cases."""
    notes = []
    for domain in raw.domain_names if targets is None else targets:
        if not any(c.domain == domain and c.label_path for c in raw.test_cases.values()):
            notes.append(f"Domain {domain} has no labelled test cases (labelsTs): models that did not train on it are "
                         "tested on its training cases; its in-domain cell is empty.")
    return notes
