"""dfa-ray: DFA search for knowledge distillation as Ray Tune sweeps."""
__version__ = "0.1.0"
