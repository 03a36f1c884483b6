"""kwok, the dev cluster's simulated nodes: their shapes (``nodes``) and the lifecycle stages
that drive their pods (``stages.yaml``, package data)."""
