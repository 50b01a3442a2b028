"""Training: the models and optimizers a config names, the one step clock, the loop that
trains and evaluates, and the exact evaluation of a split."""
