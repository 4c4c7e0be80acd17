"""The typed trial configs of each node of a sweep, built from its validated spec.

No Ray here: the sweep driver (dfa_ray.sweep) hands these to Tune, the trainables parse them
back (dfa_ray.tune.configs), and tests and benchmarks build them without a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from dfa_ray.engine.recipes import get_recipe
from dfa_ray.errors import ConfigError
from dfa_ray.spec import PairSpec, SweepSpec, tune_space
from dfa_ray.teacher_store import TeacherStore
from dfa_ray.tune.configs import DataRef, DistillJob, DistillTrial, GroupTrial, SearchTrial, TeacherTrial, Transfer

Logger = Callable[[str], None]

REFERENCE_SEP = ":"


def common_fields(spec: SweepSpec) -> dict[str, Any]:
    """The fields every trial of the sweep shares."""
    return {"sweep": spec.name, "dataset": spec.data.name,
            "data_spec": DataRef(name=spec.data.name, root=spec.data.root, options=dict(spec.data.options)),
            "cpu": float(spec.resources.cpu), "gpu": float(spec.resources.gpu),
            "fast": spec.fast.model_dump(), "plugins": tuple(spec.plugins)}


def common_config(spec: SweepSpec, stage: str) -> dict[str, Any]:
    """The shared fields as Tune's JSON-able config (with the stage)."""
    out = {**common_fields(spec), "stage": stage}
    out["data_spec"] = out["data_spec"].model_dump()
    out["plugins"] = list(out["plugins"])
    return out


# -- teachers ---------------------------------------------------------------------------------
def teacher_jobs(spec: SweepSpec, data: Any) -> tuple[dict[str, Path], list[TeacherTrial]]:
    """The store folder of every teacher, and a trial for each one not in the store yet."""
    from dfa_ray.importer import resolve_spec_teachers

    recipe = get_recipe(spec.protocol, spec.teacher_recipe_overrides())
    store = TeacherStore(spec.teacher_store)
    # teachers taken as they are (`teachers.from`: imported, or named folders): never trained
    folders: dict[str, Path] = resolve_spec_teachers(spec.teachers.from_, spec.teacher_store, spec.teacher_names,
                                                     data.info.name)
    trials: list[TeacherTrial] = []
    for model in spec.teacher_names:
        if model in folders:
            continue
        folder = store.folder_for(model, data, recipe, spec.teachers.seed)
        folders[model] = folder
        if not store.finished(folder):
            trials.append(TeacherTrial(**common_fields(spec), model=model, seed=spec.teachers.seed,
                                       recipe=recipe, store_dir=str(folder)))
    return folders, trials


# -- search -----------------------------------------------------------------------------------
def search_trial_count(spec: SweepSpec) -> int:
    """Trials of one pair's search: num_samples times the size of the grid dimensions."""
    return spec.search.trial_count


def search_config(spec: SweepSpec, pair: PairSpec, teacher_folder: Path) -> dict[str, Any]:
    """Tune's config of a pair's search: its fixed fields and, in `options`, the search space
    (Tune samples it; the trainable parses the sampled config as a `SearchTrial`)."""
    trial = SearchTrial(**common_fields(spec), teacher=pair.teacher, student=pair.student,
                        teacher_path=str(teacher_folder), seed=spec.search.seed, epochs=spec.search.epochs,
                        options=spec.search.search_options())
    config = trial.model_dump(mode="json")
    config["options"] = {**config["options"], **tune_space(spec.search.space)}
    return config


# -- distillation -----------------------------------------------------------------------------
def is_dfa(method: str) -> bool:
    """Whether a spec method needs the pair's search (dfa, and its reference genotypes, whose
    options are inherited from the searched genotype)."""
    return method.partition(REFERENCE_SEP)[0] == "dfa"


def distill_trials(spec: SweepSpec, pair: PairSpec, teacher_folder: Path, methods: list[str],
                   genotype: dict | None) -> list[DistillTrial]:
    """A trial per (method, seed) of `methods` for `pair`; `genotype` is the pair's searched
    (or transferred) genotype document, needed by the dfa methods only."""
    recipe = get_recipe(spec.protocol, spec.distill_recipe_overrides())
    trials = []
    for method in methods:
        base, _, reference = method.partition(REFERENCE_SEP)
        options = dict(spec.distill.options.get(method, {}))
        document, transfer = None, None
        if base == "dfa":
            if genotype is None:
                raise ValueError(f"{pair.name} {method}: a dfa trial needs the pair's genotype")
            if reference:
                options = reference_options(spec, genotype, options)
            else:
                document = {k: v for k, v in genotype.items() if k != "_transfer"}
                if "_transfer" in genotype:
                    transfer = Transfer(**genotype["_transfer"])
        for seed in spec.distill.seeds:
            trials.append(DistillTrial(**common_fields(spec), teacher=pair.teacher, student=pair.student,
                                       teacher_path=str(teacher_folder), recipe=recipe, seed=seed, method=method,
                                       method_options=options, genotype=document, transfer=transfer))
    return trials


def group_trials(spec: SweepSpec, trials: list[DistillTrial]) -> list[DistillTrial | GroupTrial]:
    """The trials of one distillation node as Tune runs them: with `distill.share_teacher`, the
    jobs of each (pair, seed) in `distill.groups_of` their methods (one `GroupTrial` per group,
    members in the spec's method order, one teacher forward per batch for all of them,
    docs/shared_teacher.md); without share_teacher, or when every group would have one member
    (it would save nothing), the trials as they are."""
    if not spec.distill.share_teacher:
        return trials
    by_unit: dict[tuple[str, int], list[DistillTrial]] = {}
    for trial in trials:
        by_unit.setdefault((trial.pair, trial.seed), []).append(trial)
    units = [[[by_method[m] for m in methods] for methods in spec.distill.groups_of(list(by_method))]
             for by_method in ({job.method: job for job in jobs} for jobs in by_unit.values())]
    if all(len(members) == 1 for groups in units for members in groups):
        return trials
    # one trainable per experiment: a group of one among real groups stays a (one-member) group
    out: list[DistillTrial | GroupTrial] = []
    for groups in units:
        for members in groups:
            first = members[0]
            shared = {name: getattr(first, name) for name in GroupTrial.model_fields if name not in ("stage", "members")}
            out.append(GroupTrial(**shared, members=tuple(
                DistillJob(**{name: getattr(job, name) for name in DistillJob.model_fields}) for job in members)))
    return out


def reference_options(spec: SweepSpec, searched: dict | None, own: dict[str, Any]) -> dict[str, Any]:
    """The options of a reference-genotype run (dfa:last, dfa:average, dfa:random): exactly
    those of the pair's searched `dfa` run (its feature weight = the search's lambda, its
    feature kind and candidate scaling, the spec's dfa options), so the two differ in the
    aggregation alone; the reference's own spec options still win (an ablation may want to
    vary them on purpose)."""
    from dfa_ray.engine.methods.dfa import options_from_search

    inherited = options_from_search((searched or {}).get("options", {}))
    return {**inherited, **spec.distill.options.get("dfa", {}), **own}


def transferred_genotypes(spec: SweepSpec, log: Logger) -> dict[str, dict]:
    """Each pair's genotype from `distill.genotype_from` (DFA-T), checked to be for the same
    architectures; a genotype from another dataset is marked as a transfer, and the trial then
    records where it came from (`transfer.source_dataset`, `transfer.genotype`)."""
    from dfa_ray.dfa.genotype import Genotype

    source = spec.distill.genotype_from
    out: dict[str, dict] = {}
    for pair in spec.pairs:
        path = source.path_for(pair.dir_name, spec.storage)
        if not path.is_file():
            raise ConfigError(f"distill.genotype_from: no genotype for {pair.name} at {path}; run the source "
                              "sweep's search first, or fix the path")
        genotype = Genotype.load(path)
        if (genotype.teacher, genotype.student) != (pair.teacher, pair.student):
            raise ConfigError(f"distill.genotype_from: {path} is for {genotype.teacher} -> {genotype.student}, "
                              f"not {pair.name}; genotype transfer needs the same architectures")
        doc = genotype.to_dict()
        if genotype.dataset != spec.data.name:
            doc["_transfer"] = {"source_dataset": genotype.dataset, "genotype": str(path)}
        out[pair.name] = doc
        log(f"[sweep] {pair.name}: genotype from {path} (searched on {genotype.dataset})")
    return out
