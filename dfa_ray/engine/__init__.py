"""The training, search and distillation loops. No Ray in here: the engine runs in a notebook."""
