"""Ray Tune Trainables around the engine, and the driver-side callbacks that write results."""

from dfa_ray.tune.trainables import DistillTrainable, GroupDistillTrainable, SearchTrainable, TeacherTrainable

__all__ = ["TeacherTrainable", "SearchTrainable", "DistillTrainable", "GroupDistillTrainable"]
