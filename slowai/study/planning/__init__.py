"""Before any work: the budget that fits the time, measured on this machine, checked against what a resumed study
stored, and one plan per study that every worker adopts. Nothing here writes until `Planner.adopt`."""
