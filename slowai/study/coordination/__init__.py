"""Sharing one study between workers through its Optuna storage: the studies, the work queue, leases and failure
classes. The only room that knows other workers exist."""
