"""Doing the work on one worker: the scheduler's loop, one training run and its callbacks, the data it trains on,
its saved model and its W&B run."""
