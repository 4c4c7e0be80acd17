"""DFA search: group pairing, aggregation (beta, alpha), the search network and its losses,
the bi-level architect, one search step, and the aggregation genotype."""

from dfa_ray.dfa.aggregation import Aggregation, aggregate
from dfa_ray.dfa.architect import Architect
from dfa_ray.dfa.genotype import (
    GENOTYPE_VERSION,
    REFERENCE_KINDS,
    Genotype,
    GenotypeGroup,
    derive,
    genotype_from_search,
    reference_genotype,
)
from dfa_ray.dfa.options import DEFAULT_LAMBDA, SearchOptions, parse_derive
from dfa_ray.dfa.pairing import GroupPair, GroupPairing, pair_groups
from dfa_ray.dfa.search_net import SearchBatch, SearchNet, teacher_candidates
from dfa_ray.dfa.search_step import (
    SearchParts,
    build_search,
    make_cosine_scheduler,
    make_ts_optimizer,
    make_weight_optimizer,
    search_step,
)

__all__ = [
    "Aggregation", "aggregate", "Architect", "GENOTYPE_VERSION", "REFERENCE_KINDS", "Genotype",
    "GenotypeGroup", "derive", "genotype_from_search", "reference_genotype", "DEFAULT_LAMBDA",
    "SearchOptions", "parse_derive", "GroupPair", "GroupPairing", "pair_groups", "SearchBatch",
    "SearchNet", "teacher_candidates", "SearchParts", "build_search", "make_cosine_scheduler",
    "make_ts_optimizer", "make_weight_optimizer", "search_step",
]
