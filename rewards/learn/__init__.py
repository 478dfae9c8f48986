"""Learning scorers from search trees: training targets built from saved trees
(:mod:`rewards.learn.targets`), readers for saved trees (:mod:`rewards.learn.trees`) and the
fine-tuning of a value head or a PRM on those targets (:mod:`rewards.learn.trainer`)."""
